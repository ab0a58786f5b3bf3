"""The FR3's commanded-signal limits and the monitor that checks them at 1 kHz (ROS-free).

Franka's "Control Interface Specification and Robot Limits", section "Limits for Franka
Research 3" (https://frankarobotics.github.io/docs/robot_specifications.html): joint-space
necessary conditions q_min < q_c < q_max, |dq_c| < dq_max (position-dependent for the FR3),
|ddq_c| < ddq_max, |dddq_c| < dddq_max on the commanded signal, which the robot differentiates
at 1 ms. Split out of sim/robot_side.py, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
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
    # FR3: the velocity limit shrinks towards each position limit (see velocity_bounds)
    position_dependent_velocity: bool = False

    def velocity_bounds(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) velocity limits at the commanded position `q`.

        For the FR3 the documented limit depends on the position: per joint,
        upper = min(v_max, max(0, -c + sqrt(max(0, k * (q_u - q))))) and
        lower = max(-v_max, min(0, c - sqrt(max(0, k * (q + q_l))))), with (c, k, q_u, q_l) of
        _FR3_VELOCITY_SHAPE; so a joint near a position limit may only move slowly towards it.
        Without that flag the bounds are the constant +-v_max."""
        if not self.position_dependent_velocity:
            return -self.v_max, self.v_max
        c, k, q_u, q_l = _FR3_VELOCITY_SHAPE
        upper = np.minimum(
            self.v_max,
            np.maximum(0.0, -c + np.sqrt(np.maximum(0.0, k * (q_u - q))))
        )
        lower = np.maximum(
            -self.v_max,
            np.minimum(0.0, c - np.sqrt(np.maximum(0.0, k * (q + q_l))))
        )
        return lower, upper


# The FR3's position-dependent velocity limits, as Franka documents them (robot_specifications,
# "Limits for Franka Research 3"; libfranka's computeUpperLimitsJointVelocity /
# computeLowerLimitsJointVelocity implement the same shape): offset c, gain k, and the positions
# q_u (upper) and -q_l (lower) at which the limit reaches zero.
_FR3_VELOCITY_SHAPE = (
    np.array([0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35]),
    np.array([12.0, 5.17, 7.00, 8.00, 34.0, 11.0, 34.0]),
    np.array([2.75010, 1.79180, 2.90650, -0.14580, 2.81010, 4.52050, 3.01960]),
    np.array([2.75010, 1.79180, 2.90650, 3.04810, 2.81010, -0.54092, 3.01960]),
)

FR3_LIMITS = JointLimits(
    q_min=np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    q_max=np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    v_max=np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    a_max=np.full(7, 10.0),
    j_max=np.full(7, 5000.0),
    position_dependent_velocity=True,
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
        v_lo, v_hi = lim.velocity_bounds(q_c)
        for i, name in enumerate(self.names):
            if q_c[i] <= lim.q_min[i]:
                return Reflex(name, "position", float(q_c[i]), float(lim.q_min[i]), t)
            if q_c[i] >= lim.q_max[i]:
                return Reflex(name, "position", float(q_c[i]), float(lim.q_max[i]), t)
            if v[i] <= v_lo[i] or v[i] >= v_hi[i]:
                bound = v_lo[i] if v[i] <= v_lo[i] else v_hi[i]
                return Reflex(name, "velocity", float(v[i]), float(bound), t)
            for quantity, value, bound in (
                ("acceleration", a[i], lim.a_max[i]),
                ("jerk", j[i], lim.j_max[i]),
            ):
                if abs(value) >= bound:
                    return Reflex(name, quantity, float(value), float(bound), t)
        return None
