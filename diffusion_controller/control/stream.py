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

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from diffusion_controller.control.interpolation import quintic, single
from diffusion_controller.control.types import Command

JUMP_TOL = 1e-6  # rad: a step further from the filter's one-tick motion is a new run
# Later than this (slots the loop did not follow: a stall), the old timeline is given up. A tick
# that merely starts late sends its command on time's grid, late: keeping the grid is the better
# bet (the controller may still take it on a shared segment; a restart always re-plans)
RESTART_LATENESS = 0.25  # s
FIRST_MARGIN = 4  # periods a message's first point is due before the message is sent, at least
BRIDGE_HOLD = 4  # periods a new run at rest holds its first command, at least (bridge_hold)
REST_TOL = 1e-9  # rad, rad/s, rad/s^2: at rest, for retiming
# a resync within TRANSITION_GAP of the run coming to rest, at most TRANSITION_MAX away on every
# joint, is reached by a rest-to-rest spline whose acceleration stays under TRANSITION_ACCEL
# (its peak is 5.77 delta / T^2); a larger jump, or a later one, starts a new run
TRANSITION_MAX = 0.05  # rad
TRANSITION_GAP = 0.3  # s
TRANSITION_ACCEL = 2.0  # rad/s^2


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
        self.past = math.ceil(self.lead / self.period - 1e-9) + FIRST_MARGIN + self.every
        # lateness beyond which a message may arrive after its shared segments (the second-
        # newest command's point), leaving two periods for computing, transport and pick-up
        self.budget = self.lead - (self.every + 2) * self.period
        # periods a new run at rest holds its first command: the messages after the bridge
        # must be taken within it (transport and a loaded simulator: up to `lead`)
        self.bridge_hold = max(BRIDGE_HOLD, math.ceil(self.lead / self.period - 1e-9))
        self.restarts = 0
        self.late = 0  # commands sent later than the budget (a tick that started late)
        self.restart_lateness = 0.0  # how late the commands were at the last restart (s)
        self.reanchors = 0
        self.transitions = 0  # resyncs bridged by a rest-to-rest spline
        self.runs = 0  # runs started (each bridged from the arm's controller's own state)
        self.reset()

    def reset(self) -> None:
        """Forget the run (the next command starts a new one, timed afresh)."""
        self._hist: deque[tuple[Command, float]] = deque()  # (command, time), see _trim
        self.lateness = 0.0
        self._bridge_end: float | None = None  # see points()
        self._bridge_sent = False

    def push(self, cmd: Command) -> None:
        """The loop's next command, at the time one period after the previous one's.

        One that does not follow the previous one (the filter holds one acceleration per tick,
        so each step moves by the mean of its two velocities times the period) is a re-seed
        from the measurement. Shortly after the run came to rest and close by (a resync after
        a fault), the run goes on: the arm's controller is coming to rest where the run did,
        and a rest-to-rest spline takes it to the new command over a time that keeps that
        spline's acceleration under TRANSITION_ACCEL. Otherwise it starts a new run."""
        if self._hist and cmd.stamp - self._hist[-1][0].stamp > TRANSITION_GAP:
            # the loop was quiet (disabled): whatever the arm's controller did meanwhile (a
            # simulator reset, an error recovery), a new run bridges from its own state
            self.reset()
        if self._hist:
            prev, t_prev = self._hist[-1]
            step = cmd.positions - prev.positions
            if np.any(np.abs(step - 0.5 * (prev.velocities + cmd.velocities) * self.period)
                      > JUMP_TOL):  # fmt: skip
                delta = float(np.max(np.abs(step)))
                if _at_rest([prev]) and delta <= TRANSITION_MAX:
                    span = max(self.period, math.sqrt(5.78 * delta / TRANSITION_ACCEL))
                    t = max(t_prev + span, cmd.stamp + self.lead)
                    self.transitions += 1
                    self._hist.append((cmd, t))
                    self.lateness = cmd.stamp + self.lead - t
                    self._trim(cmd)
                    return
                self.reset()
        if not self._hist:
            t = cmd.stamp + self.lead
            self.runs += 1
            self._bridge_end = t
            self._bridge_sent = False
            self._hist.append((cmd, t))
            if _at_rest([cmd]):
                # the bridge's last stretch: the run's first command held BRIDGE_HOLD periods,
                # so the messages after the bridge agree with it (at rest) when taken
                for k in range(1, self.bridge_hold + 1):
                    self._hist.append((cmd, t + k * self.period))
            self.lateness = 0.0
            return
        prev, t_prev = self._hist[-1]
        t = t_prev + self.period
        self.lateness = cmd.stamp + self.lead - t
        if self.lateness > 0.5 * self.period and _at_rest([c for c, _ in self._hist]):
            # the commands so far hold one position at rest: hold it until this one is due
            # (a constant spline, however long), then one period to this command
            t = cmd.stamp + self.lead
            self._hist.append((prev, t - self.period))
            self.lateness = 0.0
            self.reanchors += 1
        elif self.lateness > RESTART_LATENESS:
            self.restarts += 1
            self.restart_lateness = self.lateness
            self.reset()
            self.push(cmd)
            return
        elif self.lateness > self.budget:
            self.late += 1
        self._hist.append((cmd, t))
        self._trim(cmd)

    def _trim(self, cmd: Command) -> None:
        """Keep the commands from the last one due at least FIRST_MARGIN periods before `cmd`
        is sent (about a period after its stamp's tick began), so that a message's first point
        is past when the message arrives (the `past` commands before the newest, in a run).

        Only a command the loop computed this tick (one with a plan, which a message carries)
        trims: a followed slot's stamp is the loop's count of slots, which may run ahead of the
        clock the arm's controller samples on (a ticker on monotonic time, a simulator's clock
        that lagged), and trimming by it would drop points the controller is still
        interpolating, making the next message's first point lie ahead (Humble's stall)."""
        if cmd.plan is None:
            return
        limit = cmd.stamp - (1 + FIRST_MARGIN) * self.period
        while len(self._hist) > 2 and self._hist[1][1] <= limit:
            self._hist.popleft()

    @property
    def newest_time(self) -> float:
        """The time of the newest command (nan before the first)."""
        return self._hist[-1][1] if self._hist else math.nan

    def points(self) -> list[StreamPoint]:
        """The message for the newest command: the kept commands, the newest, its plan; or
        nothing (send no message) while a new run's bridge lasts.

        A new run's first message cannot repeat what the arm's controller is running: its first
        point (the run's first command, `lead` ahead) is still ahead when it arrives, so the
        controller splines from its own state to it over about `lead`: the bridge. Until that
        point is due the stream sends nothing more (a message taken during the bridge would
        re-plan it, repeating the previous command while moving). A run that starts at rest
        holds its first command for `bridge_hold` periods after it, so the messages that follow,
        taken within that time, agree with the bridge message (at rest) where they are taken:
        from then on the stream is seamless."""
        if not self._hist:
            return []
        newest = self._hist[-1][0]
        if self._bridge_end is not None:
            if not self._bridge_sent:
                self._bridge_sent = True
            elif newest.stamp - self.period <= self._bridge_end:
                return []
            else:
                self._bridge_end = None
        return self._message_points()

    def _message_points(self) -> list[StreamPoint]:
        """The kept commands, then the rest of the certified plan of the newest command that has
        one (a followed slot has none: it is a row of that plan)."""
        states = [(c.positions, c.velocities, c.accelerations) for c, _ in self._hist]
        times = [t for _, t in self._hist]
        plan, done = self._plan()
        if plan is not None:
            t_newest = times[-1]
            states += [(p[0], p[1], p[2]) for p in plan[done:]]
            times += [t_newest + (k + 1) * self.period for k in range(len(plan) - done)]
        # tick k's acceleration is stored with the state that ends it: a point's own value is
        # the mean of its tick's and the next tick's (the last keeps its own)
        accs = [0.5 * (states[k][2] + states[k + 1][2]) for k in range(len(states) - 1)]
        accs.append(states[-1][2])
        return [
            StreamPoint(t, np.asarray(q, dtype=np.float64), np.asarray(v, dtype=np.float64),
                        np.asarray(a, dtype=np.float64))
            for t, (q, v, _), a in zip(times, states, accs, strict=True)
        ]  # fmt: skip

    def _plan(self) -> tuple[np.ndarray | None, int]:
        """The plan of the newest kept command that has one, and how many of its rows the kept
        commands after it (followed slots) already are."""
        for done, (cmd, _) in enumerate(reversed(self._hist)):
            if cmd.plan is not None:
                return cmd.plan, done
        return None, 0

    # ------------------------------------------------------------ the arm's controller's reference
    @property
    def newest(self) -> Command | None:
        """The newest command (None before the first, and after reset())."""
        return self._hist[-1][0] if self._hist else None

    def running(self, stamp: float) -> bool:
        """Whether a command stamped `stamp` goes on with the current run (see push: after the
        loop was quiet for longer than TRANSITION_GAP, a new run bridges from the arm's own
        controller, whatever it did meanwhile; a stamp before the newest's is a clock that
        stepped back, a simulator's reset)."""
        return bool(self._hist) and 0.0 <= stamp - self._hist[-1][0].stamp <= TRANSITION_GAP

    def state_at(self, t: float) -> StreamPoint | None:
        """What the arm's controller commands at `t` (stamp clock) from this run's points: the
        quintic Humble samples between the two points around `t`, the last point held past the
        end. None without a run, or before its first point (a bridge: there the controller
        splines from its own state, which the stream does not know)."""
        if not self._hist:
            return None
        pts = self._message_points()
        if t < pts[0].time - 1e-9:
            return None
        for p0, p1 in itertools.pairwise(pts):
            if t < p1.time:
                span = p1.time - p0.time
                coeffs = quintic(p0.positions, p0.velocities, p0.accelerations, p1.positions,
                                 p1.velocities, p1.accelerations, span)  # fmt: skip
                q, v, a = single(p0.time, span, coeffs).evaluate(t)
                return StreamPoint(t, q, v, a)
        last = pts[-1]
        return StreamPoint(t, last.positions, last.velocities, last.accelerations)

    def slots(self, stamp: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """The states (q, v, a) the arm's controller runs in the slots after the newest command
        up to one stamped `stamp` (the rest of the certified plan, then its final rest held), for
        a loop that re-seeds its commanded state from them rather than from a measurement; []
        when no slot lies between; None without a run, or when the newest command has neither
        a plan nor is at rest (what follows it is not known)."""
        if not self._hist:
            return None
        newest = self._hist[-1][0]
        n = math.floor((stamp - newest.stamp) / self.period + 1e-6)
        plan, done = self._plan()
        if n <= 0:
            return []
        if plan is None or done >= len(plan):
            if not _at_rest([newest]):
                return None
            return [(newest.positions, newest.velocities, newest.accelerations)] * n
        rows = plan[done:]
        return [tuple(rows[min(k, len(rows) - 1)]) for k in range(n)]  # type: ignore[misc]
