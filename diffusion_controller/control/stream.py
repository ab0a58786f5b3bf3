"""The streamed trajectory for a joint_trajectory_controller: points that replace each other
seamlessly.

Humble's joint_trajectory_controller (open_loop_control true) takes a new message at its next
1 kHz cycle and, while the message's first point is still ahead, splines from the state it
commanded one cycle earlier, placed at the current cycle: the first sample repeats the previous
command, an acceleration of -v / 1 ms while moving, which a Franka answers with a reflex (see
sim/robot_side.py). Once the first point is due, the controller samples the message's own
splines and never looks at the old command. So a seamless stream needs two things:

1. every message's first point is already due when the message arrives, and
2. the message's splines around the arrival time are the previous message's, exactly: the same
   points (positions, velocities, accelerations) at the same times.

This stream gives the k-th command of a run the fixed time `anchor + k * period` (anchor: the
first command's stamp plus `lead`), and each message carries the last `past` commands before the
newest, the newest, and the filter's certified plan after it. A command's point never changes
once the next command is known, so consecutive messages agree on every segment but the last
two commands' and the plan's; the controller switches to the new message on a segment both
share, as long as the message arrives before the second-newest command's point is due, which
`lead` leaves time for (about lead - 2 periods).

A point's acceleration is the mean of the accelerations of the ticks on either side of it (the
filter holds one acceleration per tick, so a state's own is ambiguous; a quintic spline through
states given the tick's value on one side overshoots to reconcile the other).

A missed control tick would make the commands run one period later than their fixed times
(the filter advances one tick per tick it runs) and eat the lead; the control loop avoids it by
committing the filter's certified continuation over missed slots, which the arm's controller ran
meanwhile (ControlLoop.follow_on_miss), so commands stay on their slots. A tick that starts late
sends its message late: counted in `late` when beyond the budget, and still sent on the grid.
While the commands before the newest are all at rest at one position the stream re-anchors at
no cost (their splines are constant). Commands later than RESTART_LATENESS (a stall the loop did
not follow) restart the stream (counted in `restarts`): the next message is timed afresh and
the controller re-plans from its own state, which, while moving, is a reflex on a Franka.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from diffusion_controller.control.types import Command

JUMP_TOL = 1e-6  # rad: a step further from the filter's one-tick motion is a new run
# Later than this (slots the loop did not follow: a stall), the old timeline is given up. A tick
# that merely starts late sends its command on time's grid, late: keeping the grid is the better
# bet (the controller may still take it on a shared segment; a restart always re-plans)
RESTART_LATENESS = 0.25  # s
BRIDGE_HOLD = 4  # periods a new run at rest holds its first command (transport allowance)
REST_TOL = 1e-9  # rad, rad/s, rad/s^2: at rest, for retiming (1e-9 rad/s over 1 s: 1e-9 rad)


@dataclass(frozen=True)
class StreamPoint:
    """One point of a streamed trajectory: its time (stamp clock, s) and state (rad, rad/s,
    rad/s^2)."""

    time: float
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray


def _at_rest(cmds: list[Command]) -> bool:
    if not cmds:
        return False
    q0 = cmds[0].positions
    return all(
        np.all(np.abs(c.velocities) <= REST_TOL) and np.all(np.abs(c.accelerations) <= REST_TOL)
        and np.all(np.abs(c.positions - q0) <= REST_TOL)
        for c in cmds
    )


class TrajectoryStream:
    """Turns the loop's commands, one per tick, into seamless streamed trajectories."""

    def __init__(self, period: float, lead: float, every: int = 1) -> None:
        """`every`: a message goes out every `every` commands (the caller decides when), so
        the previous message may be that many commands old."""
        if not (math.isfinite(period) and period > 0.0 and math.isfinite(lead) and lead >= 0.0):
            raise ValueError(f"period must be > 0 and lead >= 0, got {period}, {lead}")
        self.period = float(period)
        self.lead = float(lead)
        self.every = max(1, int(every))
        # commands before the newest in each message: the first point is due `past` periods
        # before the newest's, so at least 4 periods before the newest is sent (a period
        # before the newest is sent; 3 periods more for an arm clock behind the stamp clock
        self.past = math.ceil(self.lead / self.period - 1e-9) + 4 + self.every
        # lateness beyond which a message may arrive after its shared segments (the second-
        # newest command's point), leaving two periods for computing, transport and pick-up
        self.budget = self.lead - (self.every + 2) * self.period
        self.restarts = 0
        self.late = 0  # commands sent later than the budget (a tick that started late)
        self.restart_lateness = 0.0  # how late the commands were at the last restart (s)
        self.reanchors = 0
        self.reset()

    def reset(self) -> None:
        """Forget the run (the next command starts a new one, timed afresh)."""
        self._hist: deque[Command] = deque(maxlen=self.past + 1)
        self._anchor = 0.0
        self._count = 0  # index of the newest command in the run
        self.lateness = 0.0
        self._bridge_end: float | None = None  # see points()
        self._bridge_sent = False

    def push(self, cmd: Command) -> None:
        """The loop's next command. One that does not follow the previous one (the filter holds
        one acceleration per tick, so each step moves by the mean of its two velocities times
        the period) starts a new run: the loop re-seeded from the measurement."""
        if self._hist:
            prev = self._hist[-1]
            step = cmd.positions - prev.positions
            if np.any(np.abs(step - 0.5 * (prev.velocities + cmd.velocities) * self.period)
                      > JUMP_TOL):  # fmt: skip
                self.reset()
        fresh = not self._hist
        if fresh:
            self._anchor = cmd.stamp + self.lead
            self._count = 0
            self._bridge_end = self._anchor
            self._bridge_sent = False
        else:
            self._count += 1
        self._hist.append(cmd)
        if fresh and _at_rest([cmd]):
            # the bridge's last stretch: the run's first command held for BRIDGE_HOLD periods,
            # so the messages after the bridge agree with it (at rest) when they are taken
            for _ in range(BRIDGE_HOLD):
                self._count += 1
                self._hist.append(cmd)
        self.lateness = cmd.stamp + self.lead - self.time_of(self._count)
        if self.lateness > 0.5 * self.period and _at_rest(list(self._hist)[:-1]):
            # the commands before the newest hold one position at rest: their splines are
            # constant, so retiming them changes nothing the arm does
            self._anchor += self.lateness
            self.lateness = 0.0
            self.reanchors += 1
        elif self.lateness > RESTART_LATENESS:
            self.restarts += 1
            self.restart_lateness = self.lateness
            self.reset()
            self.push(cmd)
        elif self.lateness > self.budget:
            self.late += 1

    def time_of(self, index: int) -> float:
        """The fixed time of the run's command `index`."""
        return self._anchor + index * self.period

    def points(self) -> list[StreamPoint]:
        """The message for the newest command: the kept commands, the newest, its plan; or
        nothing (send no message) while a new run's bridge lasts.

        A new run's first message cannot repeat what the arm's controller is running: its first
        point (the run's first command, `lead` ahead) is still ahead when it arrives, so the
        controller splines from its own state to it over about `lead`: the bridge. Until that
        point is due the stream sends nothing more (a message taken during the bridge would
        re-plan it, repeating the previous command while moving). A run that starts at rest
        holds its first command for BRIDGE_HOLD periods after it, so the messages that follow,
        taken within that time, agree with the bridge message (at rest) where they are taken:
        from then on the stream is seamless."""
        if not self._hist:
            return []
        newest = self._hist[-1]
        if self._bridge_end is not None:
            if not self._bridge_sent:
                self._bridge_sent = True
            elif newest.stamp - self.period <= self._bridge_end:
                return []
            else:
                self._bridge_end = None
        states = [(c.positions, c.velocities, c.accelerations) for c in self._hist]
        if newest.plan is not None:
            states += [(p[0], p[1], p[2]) for p in newest.plan]
        # tick k's acceleration is stored with the state that ends it: a point's own value is
        # the mean of its tick's and the next tick's (the last keeps its own)
        accs = [0.5 * (states[k][2] + states[k + 1][2]) for k in range(len(states) - 1)]
        accs.append(states[-1][2])
        first = self._count - (len(self._hist) - 1)
        return [
            StreamPoint(self.time_of(first + k), np.asarray(q, dtype=np.float64),
                        np.asarray(v, dtype=np.float64), np.asarray(a, dtype=np.float64))
            for k, ((q, v, _), a) in enumerate(zip(states, accs, strict=True))
        ]  # fmt: skip
