"""The robot side of the command path: a 1 kHz ros2_control controller and the FR3's checks.

A real Franka runs its controllers at 1 kHz and aborts the motion when the commanded joint signal,
differentiated at 1 ms as libfranka does, leaves the documented limits. Without modelling that, a
sim that tracks whatever it gets cannot show that a 10 ms position staircase is a 1 kHz velocity
spike. This module is ROS-free; sim/sim_node.py wires it to the topics.

- ForwardController: forward_command_controller semantics, the last command written every cycle,
  no interpolation and no timeout.
- TrajectoryController: Humble's joint_trajectory_controller with `open_loop_control: true`,
  sampled as its Trajectory::sample does (splines: linear / cubic / quintic from the positions /
  velocities / accelerations the points give). A message replaces the trajectory at the next
  1 kHz cycle; that cycle places the state commanded at the previous cycle ("the point before
  the message") at its own time, so while the first point is still ahead the command is the
  spline from there to it, and the first sample after the replacement repeats the previous
  command. Once the first point is due the command is the message's own splines; past the last
  point it holds that point. Empty messages are refused. With `cmd_timeout` > 0 the timeout is
  counted from the last point's time; when it passes the controller holds the *measured*
  position (set_hold_position()), from the next cycle.
- LimitMonitor: per joint, q_c, and its finite differences at 1 ms (velocity, acceleration,
  jerk) against FR3_LIMITS, the velocity limit depending on the position as documented for the
  FR3; the first violation is a Reflex and the arm holds until recover().

What reaches the monitor is the controller's output unchanged: franka_ros2's FR3 hardware
interface writes the position command through libfranka's ActiveMotionGenerator::writeOnce with
its rate limiter and low-pass filter off (both hard-wired false for the position interface), and
libfranka copies it into the robot command as q_c; the robot differentiates it itself.

FR3 limits and the monitor live in sim/fr3_limits.py (re-exported here), from Franka's "Control
Interface Specification and Robot Limits", section "Limits for Franka Research 3"
(https://frankarobotics.github.io/docs/robot_specifications.html, formerly
frankaemika.github.io/docs/control_parameters.html).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from diffusion_controller.sim.fr3_limits import (
    DT,
    FR3_LIMITS,
    JointLimits,
    LimitMonitor,
    Reflex,
)


class ForwardController:
    """forward_command_controller: the last command, written unchanged every cycle."""

    def __init__(self, q0: np.ndarray) -> None:
        self._q = np.asarray(q0, dtype=np.float64).copy()

    def reset(self, q: np.ndarray) -> None:
        self._q = np.asarray(q, dtype=np.float64).copy()

    def command(self, q: np.ndarray, now: float) -> None:
        del now  # no timing: the forward controller has none
        self._q = np.asarray(q, dtype=np.float64).copy()

    def sample(self, t: float, measured: np.ndarray | None = None) -> np.ndarray:
        del t, measured
        return self._q.copy()


@dataclasses.dataclass(frozen=True)
class TrajectoryPoint:
    """One point of a JointTrajectory, in the controller's joint order (times in s)."""

    time_from_start: float
    positions: np.ndarray
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _State:
    """A commanded (q, v, a), as joint_trajectory_controller keeps last_commanded_state_."""

    q: np.ndarray
    v: np.ndarray
    a: np.ndarray

    @classmethod
    def rest(cls, q: np.ndarray) -> _State:
        q = np.asarray(q, dtype=np.float64).copy()
        return cls(q, np.zeros_like(q), np.zeros_like(q))


def _interpolate(
    ta: float, pa: TrajectoryPoint, tb: float, pb: TrajectoryPoint, t: float
) -> _State:
    """Trajectory::interpolate_between_points: linear when either point lacks velocities, cubic
    with velocities, quintic with velocities and accelerations on both; outside [ta, tb] the
    time is clamped and the interpolation falls back to linear (as the controller does)."""
    T = tb - ta
    s = t - ta
    has_v = pa.velocities is not None and pb.velocities is not None
    has_a = pa.accelerations is not None and pb.accelerations is not None
    if s < 0.0:
        s, has_v, has_a = 0.0, False, False
    if s > T:
        s, has_v, has_a = T, False, False
    q0, q1 = pa.positions, pb.positions
    zero = np.zeros_like(q0)
    if not has_v:
        v = (q1 - q0) / T if T != 0.0 else zero
        return _State(q0 + v * s, v.copy(), zero)
    v0, v1 = pa.velocities, pb.velocities
    assert v0 is not None and v1 is not None
    if not has_a:
        c2 = (3 * (q1 - q0) - (2 * v0 + v1) * T) / T**2 if T != 0.0 else zero
        c3 = (2 * (q0 - q1) + (v0 + v1) * T) / T**3 if T != 0.0 else zero
        return _State(q0 + v0 * s + c2 * s**2 + c3 * s**3, v0 + 2 * c2 * s + 3 * c3 * s**2,
                      2 * c2 + 6 * c3 * s)  # fmt: skip
    a0, a1 = pa.accelerations, pb.accelerations
    assert a0 is not None and a1 is not None
    h = q1 - q0
    if T != 0.0:
        c3 = (20 * h - (8 * v1 + 12 * v0) * T - (3 * a0 - a1) * T**2) / (2 * T**3)
        c4 = (-30 * h + (14 * v1 + 16 * v0) * T + (3 * a0 - 2 * a1) * T**2) / (2 * T**4)
        c5 = (12 * h - 6 * (v1 + v0) * T + (a1 - a0) * T**2) / (2 * T**5)
    else:
        c3 = c4 = c5 = zero
    return _State(
        q0 + v0 * s + 0.5 * a0 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5,
        v0 + a0 * s + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4,
        a0 + 6 * c3 * s + 12 * c4 * s**2 + 20 * c5 * s**3,
    )


class TrajectoryController:
    """joint_trajectory_controller (Humble) with open_loop_control true (module docstring).

    The sampling follows Humble's Trajectory::sample step by step. A received message becomes
    the trajectory at the next 1 kHz cycle, t_a; that cycle records the point before the
    message: the state commanded at the *previous* cycle, placed at t_a itself. Until the first
    point is due (header stamp + its time_from_start; a zero stamp means t_a) the command is the
    spline from that point to the first; from then on it is the message's own splines between
    its points, so a message whose first point is already due at t_a never looks at the old
    command at all. Past the last point it holds the last point.

    The point before the message sits one cycle late: the first sample after a replacement
    repeats the previous command (a one-cycle stall, acceleration -v / 1 ms while moving), which
    is what ros2_controllers PR #780 (Jazzy and later, not Humble) fixed by using the previous
    cycle's time. A stream for Humble must therefore make every message's first point due
    before the message arrives and let its splines continue the previous message's exactly.
    """

    def __init__(self, q0: np.ndarray, cmd_timeout: float = 0.0) -> None:
        if cmd_timeout < 0.0:
            raise ValueError("cmd_timeout must be >= 0 (0: off)")
        self.cmd_timeout = float(cmd_timeout)
        self.timed_out = False
        self.rejected = 0  # messages the controller refuses (empty trajectories)
        # messages taken while their first point was still ahead and the arm moving (faster
        # than 1e-3 rad/s): each one repeated the previous command (Humble's one-cycle stall)
        self.stalls = 0
        self.reset(q0)

    def reset(self, q: np.ndarray) -> None:
        """Activation (start-up, world reset, error recovery): hold `q` at rest."""
        self._last = _State.rest(q)
        self._hold(self._last.q)

    def _hold(self, q: np.ndarray) -> None:
        # set_hold_position(): one point, positions only, time_from_start 0, stamp 0
        self._set([TrajectoryPoint(0.0, np.asarray(q, dtype=np.float64).copy())], 0.0)
        self._holding = True

    def _set(self, points: Sequence[TrajectoryPoint], stamp: float) -> None:
        self._points = list(points)
        self._stamp = float(stamp)
        self._start: float | None = None  # trajectory_start_time_, fixed at the first sample
        self._before: tuple[float, TrajectoryPoint] | None = None
        self._holding = False

    def command(
        self, points: Sequence[TrajectoryPoint], now: float, start_time: float = 0.0
    ) -> None:
        """A message received at `now` (header stamp `start_time`, 0 = when first sampled)."""
        del now  # the controller takes it at its next cycle, whatever the receipt time
        if not points:  # validate_trajectory_msg: "Empty trajectory received." and ignored
            self.rejected += 1
            return
        times = [p.time_from_start for p in points]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("time_from_start must increase strictly along the trajectory")
        self._set(points, start_time)
        self.timed_out = False

    def _sample(self, t: float) -> tuple[_State, float | None, bool]:
        """(state, time of the segment's start, before the last point) at `t`; the first sample
        of a message fixes its start and its point-before (Humble's update())."""
        start = self._start
        before = self._before
        if start is None:
            start = self._stamp if self._stamp != 0.0 else t
            last = self._last
            before = (t, TrajectoryPoint(0.0, last.q, last.v, last.a))
        assert before is not None
        pts = self._points
        first_t = start + pts[0].time_from_start
        if t < before[0]:  # sampling before the point-before: the controller writes nothing
            return self._last, None, True
        if t < first_t:
            return _interpolate(before[0], before[1], first_t, pts[0], t), first_t, True
        for p0, p1 in itertools.pairwise(pts):
            t0, t1 = start + p0.time_from_start, start + p1.time_from_start
            if t0 <= t < t1:
                return _interpolate(t0, p0, t1, p1, t), t0, True
        p = pts[-1]
        zero = np.zeros_like(p.positions)
        return (_State(p.positions.copy(), zero if p.velocities is None else p.velocities.copy(),
                       zero if p.accelerations is None else p.accelerations.copy()),
                start + p.time_from_start, False)  # fmt: skip

    def sample_state(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The commanded (q, v, a) the cycle at `t` would write, without advancing anything."""
        s = self._sample(t)[0]
        return s.q.copy(), s.v.copy(), s.a.copy()

    def sample(self, t: float, measured: np.ndarray | None = None) -> np.ndarray:
        """One 1 kHz cycle at `t`: the commanded position (advances the controller's state).

        `measured` is the arm's measured position, which a cmd_timeout hold commands (Humble's
        set_hold_position() holds state_current_); without it the hold keeps the command."""
        if self._start is None:
            self._start = self._stamp if self._stamp != 0.0 else t
            last = self._last
            self._before = (t, TrajectoryPoint(0.0, last.q, last.v, last.a))
            if t < self._start + self._points[0].time_from_start and np.any(np.abs(last.v) > 1e-3):
                self.stalls += 1
        state, seg_t, before_last = self._sample(t)
        if (
            self.cmd_timeout > 0.0
            and not before_last
            and not self._holding
            and seg_t is not None
            and t - seg_t > self.cmd_timeout
        ):
            # "Aborted due to command timeout": the hold takes over from the next cycle
            self._hold(state.q if measured is None else measured)
            self.timed_out = True
        self._last = state
        return state.q.copy()


class RobotSide:
    """One robot controller and the limit monitor, stepped in 1 ms sub-steps of a physics tick.

    After a reflex the arm holds the last accepted commanded position and ignores commands until
    recover() (the sim's counterpart of franka's error recovery), which restarts controller and
    monitor from the measured position at rest.
    """

    def __init__(
        self,
        kind: str,
        joint_names: Sequence[str],
        q0: np.ndarray,
        cmd_timeout: float = 0.0,
        limits: JointLimits = FR3_LIMITS,
    ) -> None:
        if kind not in ("forward", "trajectory"):
            raise ValueError(f"robot_controller must be forward or trajectory, got {kind!r}")
        self.kind = kind
        self.controller: ForwardController | TrajectoryController = (
            ForwardController(q0) if kind == "forward" else TrajectoryController(q0, cmd_timeout)
        )
        self.monitor = LimitMonitor(joint_names, limits)
        self.reflexes = 0  # since the last reset()
        self.last_reflex: Reflex | None = None
        self.ignored_commands = 0
        self.stale_messages = 0  # messages planned before the last reset (see reset)
        self.reset(q0)

    @property
    def halted(self) -> bool:
        return self._halted

    def reset(self, q: np.ndarray, t: float | None = None) -> None:
        """A new episode at time `t`: at rest at `q`, no reflex latched, counts cleared.

        The simulator moved the arm (a teleport no real arm has): messages planned before the
        move are not taken (counted in `stale_messages`) until the stream starts a new run
        for the moved arm: a message whose first point is due after `t` and still ahead when
        taken (control/stream.py's bridge).
        """
        self.recover(q)
        self.reflexes = 0
        self.last_reflex = None
        self._reset_t = t
        self._awaiting_run = t is not None

    def recover(self, q_measured: np.ndarray) -> None:
        """Clear a latched reflex: hold the measured position at rest, accept commands again."""
        q = np.asarray(q_measured, dtype=np.float64)
        self.controller.reset(q)
        self.monitor.seed(q)
        self._hold = q.copy()
        self._halted = False
        self.last_t: float | None = None  # time of the last 1 kHz cycle
        self._queue: list[tuple[float, list[TrajectoryPoint], float]] = []

    def command(self, *args: object, **kwargs: object) -> bool:
        """Pass a command to the controller; False (and counted) while a reflex is latched."""
        if self._halted:
            self.ignored_commands += 1
            return False
        self.controller.command(*args, **kwargs)  # type: ignore[arg-type]
        return True

    def queue(self, points: Sequence[TrajectoryPoint], stamp: float, arrival: float) -> None:
        """A trajectory message that arrived at `arrival` (the controller's clock): the first
        1 kHz cycle at or after that time takes it, as the real controller's next cycle does,
        however late the simulator runs that cycle."""
        self._queue.append((float(arrival), list(points), float(stamp)))

    def step(
        self, t: float, measured: np.ndarray | None = None
    ) -> tuple[np.ndarray, Reflex | None]:
        """One 1 kHz cycle at `t`: the position the joints get, and a new reflex if one fired
        (`measured`: the arm's measured position, for a controller that holds it)."""
        while self._queue and self._queue[0][0] <= t + 1e-9:
            _, points, stamp = self._queue.pop(0)
            if getattr(self, "_awaiting_run", False):
                first = (stamp if stamp > 0.0 else t) + (
                    points[0].time_from_start if points else 0.0)
                if not (first > t and first >= (self._reset_t or 0.0)):
                    self.stale_messages += 1
                    continue
                self._awaiting_run = False
            self.command(points, now=t, start_time=stamp)
        if self._halted:
            return self._hold.copy(), None
        q_c = self.controller.sample(t, measured)
        self.last_t = t
        reflex = self.monitor.check(q_c, t)
        if reflex is not None:
            self._halted = True
            self.reflexes += 1
            self.last_reflex = reflex
            return self._hold.copy(), reflex
        self._hold = q_c
        return q_c, None

    def advance(
        self, t_start: float, t_end: float, measured: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[Reflex]]:
        """Run every 1 kHz cycle from the one after the last (or from `t_start`, the first
        time) up to, not including, `t_end`: the positions commanded and the reflexes fired.

        The cycles follow the clock, not the simulator: when the simulator fell behind, this
        runs (and checks) every cycle of the gap, as a real arm's loop, which never pauses,
        would have; when it runs ahead, there may be none."""
        first = t_start if self.last_t is None else self.last_t + DT
        n = max(0, math.ceil((t_end - first) / DT - 1e-6))
        qs, reflexes = [], []
        for k in range(n):
            q_c, reflex = self.step(first + k * DT, measured)
            qs.append(q_c)
            if reflex is not None:
                reflexes.append(reflex)
        return qs, reflexes
