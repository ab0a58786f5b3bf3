"""The robot side of the command path: a 1 kHz ros2_control controller and the FR3's checks.

A real Franka runs its controllers at 1 kHz and aborts the motion when the commanded joint signal,
differentiated at 1 ms as libfranka does, leaves the documented limits. Without modelling that, a
sim that tracks whatever it gets cannot show that a 10 ms position staircase is a 1 kHz velocity
spike. This module is ROS-free; sim/sim_node.py wires it to the topics.

- ForwardController: forward_command_controller semantics, the last command written every cycle,
  no interpolation and no timeout.
- TrajectoryController: joint_trajectory_controller semantics with `open_loop_control: true`: a
  spline (linear / cubic / quintic from the positions / velocities / accelerations a point gives)
  through each message's timed points, the first segment from the last *commanded* state; a new
  message replaces what is left of the old one from its start time (header stamp, or receipt time
  for a zero stamp); points already past are skipped, and when all are, the command jumps to the
  last one (joint_trajectory_controller holds a trajectory's last point once its time has passed);
  after the last point the command holds it. With `cmd_timeout` > 0, as in ros2_controllers,
  the timeout is counted from the end of the trajectory (its last point): when it passes with
  no new message the controller drops the trajectory and holds its current commanded position
  at rest (the limit monitor judges that stop like any other).
- LimitMonitor: per joint, q_c, and its finite differences at 1 ms (velocity, acceleration,
  jerk) against FR3_LIMITS; the first violation is a Reflex and the arm holds until recover().

FR3 limits from Franka's "Control Interface Specification and Robot Limits", section "Limits for
Franka Research 3" (https://frankarobotics.github.io/docs/robot_specifications.html, formerly
frankaemika.github.io/docs/control_parameters.html): joint-space necessary conditions
q_min < q_c < q_max, |dq_c| < dq_max, |ddq_c| < ddq_max, |dddq_c| < dddq_max.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

DT = 0.001  # the controller and libfranka cycle (s)


@dataclasses.dataclass(frozen=True)
class JointLimits:
    """Per-joint limits of the commanded signal (rad, rad/s, rad/s^2, rad/s^3)."""

    q_min: np.ndarray
    q_max: np.ndarray
    v_max: np.ndarray
    a_max: np.ndarray
    j_max: np.ndarray


FR3_LIMITS = JointLimits(
    q_min=np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    q_max=np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    v_max=np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    a_max=np.full(7, 10.0),
    j_max=np.full(7, 5000.0),
)


@dataclasses.dataclass(frozen=True)
class Reflex:
    """A limit violation of the commanded signal: what the real arm reports before it stops."""

    joint: str
    quantity: str  # position | velocity | acceleration | jerk
    value: float
    limit: float
    time: float

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class LimitMonitor:
    """libfranka's joint-space necessary conditions on the 1 kHz commanded positions.

    Derivatives are backward differences at DT of the commanded positions, seeded at rest
    (libfranka expects a motion to start with zero commanded velocity and acceleration).
    """

    QUANTITIES = ("position", "velocity", "acceleration", "jerk")

    def __init__(self, joint_names: Sequence[str], limits: JointLimits = FR3_LIMITS) -> None:
        self.names = list(joint_names)
        self.limits = limits
        self._q: np.ndarray | None = None
        self._v = np.zeros(len(self.names))
        self._a = np.zeros(len(self.names))

    def seed(self, q: np.ndarray) -> None:
        """Start from `q` at rest (motion start, or after an error recovery)."""
        self._q = np.asarray(q, dtype=np.float64).copy()
        self._v[:] = 0.0
        self._a[:] = 0.0

    def check(self, q_c: np.ndarray, t: float) -> Reflex | None:
        """Judge one 1 kHz sample; returns the first violation (joint order, then quantity)."""
        q_c = np.asarray(q_c, dtype=np.float64)
        if self._q is None:
            self.seed(q_c)
        assert self._q is not None
        v = (q_c - self._q) / DT
        a = (v - self._v) / DT
        j = (a - self._a) / DT
        self._q, self._v, self._a = q_c.copy(), v, a
        lim = self.limits
        for i, name in enumerate(self.names):
            if q_c[i] <= lim.q_min[i]:
                return Reflex(name, "position", float(q_c[i]), float(lim.q_min[i]), t)
            if q_c[i] >= lim.q_max[i]:
                return Reflex(name, "position", float(q_c[i]), float(lim.q_max[i]), t)
            for quantity, value, bound in (
                ("velocity", v[i], lim.v_max[i]),
                ("acceleration", a[i], lim.a_max[i]),
                ("jerk", j[i], lim.j_max[i]),
            ):
                if abs(value) >= bound:
                    return Reflex(name, quantity, float(value), float(bound), t)
        return None


class ForwardController:
    """forward_command_controller: the last command, written unchanged every cycle."""

    def __init__(self, q0: np.ndarray) -> None:
        self._q = np.asarray(q0, dtype=np.float64).copy()

    def reset(self, q: np.ndarray) -> None:
        self._q = np.asarray(q, dtype=np.float64).copy()

    def command(self, q: np.ndarray, now: float) -> None:
        del now  # no timing: the forward controller has none
        self._q = np.asarray(q, dtype=np.float64).copy()

    def sample(self, t: float) -> np.ndarray:
        del t
        return self._q.copy()


@dataclasses.dataclass
class _Knot:
    t: float
    q: np.ndarray
    v: np.ndarray | None
    a: np.ndarray | None


def _segment(k0: _Knot, k1: _Knot, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position, velocity, acceleration at `t` on the spline k0 -> k1 (order from k1's fields)."""
    T = k1.t - k0.t
    if T <= 0.0:
        return k1.q.copy(), _or0(k1.v, k1.q), _or0(k1.a, k1.q)
    s = min(max(t - k0.t, 0.0), T)
    q0, q1 = k0.q, k1.q
    if k1.v is None:  # positions only: linear, as joint_trajectory_controller does
        v = (q1 - q0) / T
        return q0 + v * s, v, np.zeros_like(q0)
    v0, v1 = _or0(k0.v, q0), k1.v
    if k1.a is None:  # cubic
        c2 = (3 * (q1 - q0) - (2 * v0 + v1) * T) / T**2
        c3 = (2 * (q0 - q1) + (v0 + v1) * T) / T**3
        return (
            q0 + v0 * s + c2 * s**2 + c3 * s**3,
            v0 + 2 * c2 * s + 3 * c3 * s**2,
            2 * c2 + 6 * c3 * s,
        )
    a0, a1 = _or0(k0.a, q0), k1.a
    h = q1 - q0
    c3 = (20 * h - (8 * v1 + 12 * v0) * T - (3 * a0 - a1) * T**2) / (2 * T**3)
    c4 = (-30 * h + (14 * v1 + 16 * v0) * T + (3 * a0 - 2 * a1) * T**2) / (2 * T**4)
    c5 = (12 * h - 6 * (v1 + v0) * T + (a1 - a0) * T**2) / (2 * T**5)
    return (
        q0 + v0 * s + 0.5 * a0 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5,
        v0 + a0 * s + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4,
        a0 + 6 * c3 * s + 12 * c4 * s**2 + 20 * c5 * s**3,
    )


def _or0(x: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like) if x is None else x


@dataclasses.dataclass(frozen=True)
class TrajectoryPoint:
    """One point of a JointTrajectory, in the controller's joint order (times in s)."""

    time_from_start: float
    positions: np.ndarray
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None


class TrajectoryController:
    """joint_trajectory_controller with open_loop_control true (see the module docstring)."""

    def __init__(self, q0: np.ndarray, cmd_timeout: float = 0.0) -> None:
        if cmd_timeout < 0.0:
            raise ValueError("cmd_timeout must be >= 0 (0: off)")
        self.cmd_timeout = float(cmd_timeout)
        self.timed_out = False
        self.reset(q0)

    def reset(self, q: np.ndarray) -> None:
        """Hold `q` at rest with no trajectory (start-up, world reset, error recovery)."""
        q = np.asarray(q, dtype=np.float64).copy()
        self._state = (q, np.zeros_like(q), np.zeros_like(q))
        self._state_t: float | None = None
        self._knots: list[_Knot] = []
        self._last_msg: float | None = None

    def command(
        self, points: Sequence[TrajectoryPoint], now: float, start_time: float = 0.0
    ) -> None:
        """A new message at `now`: from its start (stamp, 0 = now) it replaces the old one."""
        if not points:  # an empty trajectory stops the current one: hold where we are
            q = self._state[0]
            self._knots = [_Knot(now, q, np.zeros_like(q), np.zeros_like(q))]
            self._last_msg = now
            return
        start = start_time if start_time > 0.0 else now
        times = [p.time_from_start for p in points]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("time_from_start must increase strictly along the trajectory")
        new = [_Knot(start + p.time_from_start, p.positions, p.velocities, p.accelerations)
               for p in points]  # fmt: skip
        # As Humble's joint_trajectory_controller: the new message replaces the old one when it
        # arrives; until its first point is due the controller interpolates from the state it
        # commanded at arrival to that point (a future header stamp delays the first point, not
        # the replacement), and points already past are dropped. The knot sits at the time of
        # the last 1 kHz sample, so the spline continues it.
        q, v, a = self._state
        t0 = min(self._state_t, now) if self._state_t is not None else now
        ahead = [k for k in new if k.t > t0]
        # All late: the controller holds the last point at once (a jump, judged as one).
        self._knots = [_Knot(t0, q, v, a), *(ahead or new[-1:])]
        self._last_msg = now
        self.timed_out = False

    def shift_time(self, delta: float) -> None:
        """Move the commanded trajectory `delta` seconds later (the time base was re-anchored)."""
        self._knots = [dataclasses.replace(k, t=k.t + delta) for k in self._knots]
        if self._state_t is not None:
            self._state_t += delta
        if self._last_msg is not None:
            self._last_msg += delta

    def sample_state(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The commanded (q, v, a) at `t` without advancing anything."""
        ks = self._knots
        if not ks:
            return self._state
        if t <= ks[0].t:
            k = ks[0]
            return k.q.copy(), _or0(k.v, k.q), _or0(k.a, k.q)
        for k0, k1 in itertools.pairwise(ks):
            if t < k1.t:
                return _segment(k0, k1, t)
        last = ks[-1]
        return last.q.copy(), np.zeros_like(last.q), np.zeros_like(last.q)

    def sample(self, t: float) -> np.ndarray:
        """The commanded position of the 1 kHz cycle at `t` (advances the cmd_timeout watch)."""
        if (
            self.cmd_timeout > 0.0
            and self._knots
            and not self.timed_out
            and t - self._knots[-1].t > self.cmd_timeout
        ):
            q = self.sample_state(t)[0]
            self.reset(q)
            self.timed_out = True
        self._state = self.sample_state(t)
        self._state_t = t
        return self._state[0].copy()


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
        self.reset(q0)

    @property
    def halted(self) -> bool:
        return self._halted

    def reset(self, q: np.ndarray) -> None:
        """A new episode: at rest at `q`, no reflex latched, counts cleared."""
        self.recover(q)
        self.reflexes = 0
        self.last_reflex = None

    def recover(self, q_measured: np.ndarray) -> None:
        """Clear a latched reflex: hold the measured position at rest, accept commands again."""
        q = np.asarray(q_measured, dtype=np.float64)
        self.controller.reset(q)
        self.monitor.seed(q)
        self._hold = q.copy()
        self._halted = False

    def command(self, *args: object, **kwargs: object) -> bool:
        """Pass a command to the controller; False (and counted) while a reflex is latched."""
        if self._halted:
            self.ignored_commands += 1
            return False
        self.controller.command(*args, **kwargs)  # type: ignore[arg-type]
        return True

    def shift_time(self, delta: float) -> None:
        """The time base moved by `delta` (simulator re-anchored to the wall clock): keep the
        commanded signal continuous (a forward controller holds its command anyway)."""
        if isinstance(self.controller, TrajectoryController):
            self.controller.shift_time(delta)

    def step(self, t: float) -> tuple[np.ndarray, Reflex | None]:
        """One 1 kHz cycle at `t`: the position the joints get, and a new reflex if one fired."""
        if self._halted:
            return self._hold.copy(), None
        q_c = self.controller.sample(t)
        reflex = self.monitor.check(q_c, t)
        if reflex is not None:
            self._halted = True
            self.reflexes += 1
            self.last_reflex = reflex
            return self._hold.copy(), reflex
        self._hold = q_c
        return q_c, None
