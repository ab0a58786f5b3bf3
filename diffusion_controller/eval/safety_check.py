"""An independent check of every command the controller sends, against the limits it promised.

The controller's safety filter vouches that each command is within the tightened joint limits and
keeps the link collision spheres out of the keep-out spheres. The evaluation does not take its word
for it: this checker, in the evaluation's own process, rebuilds the robot model from the URDF,
derives the same effective limits from the same parameters, and checks each command it receives.

What counts (each command is checked on its own; a command may count under several kinds):

- malformed: wrong number of values, or NaN/Inf (a safety violation: such a command must never
  leave the node).
- position: a joint outside [lower, upper] of the effective (tightened) limits, beyond `tol_rad`.
- keepout: a moving link sphere overlapping a keep-out sphere (centre distance below the sum of
  radii by more than `tol_m`). The filter's own `sphere_margin` is extra clearance and is not
  required here: the check is against the hard constraint.
- keepout_inherited (not a violation): overlaps in commands that follow a keep-out update which
  the commanded state was already inside (the obstacle moved onto the arm); the filter cannot undo
  that within one tick, so these commands are counted apart until the first command outside.
- velocity (reported, not a violation): the difference of two successive commands over one
  control period above the effective velocity limit by more than `velocity_rel_tol`. Commands on
  the position interface carry no stamp, so a command lost in transit would read as a doubled
  step; this is why velocity is reported apart.

A streamed trajectory (the trajectory interface) is checked point by point: every point of
every message is something the arm's controller may execute (its plan beyond the newest command
when no newer message comes), so each distinct point gets the position and keep-out checks, and
its own velocity, and the velocity between consecutive points of the message, are compared
with the limit (check_point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.types import JointLimits, Sphere

VIOLATION_KINDS = ("malformed", "position", "keepout")


@dataclass
class CheckCounts:
    commands: int = 0
    malformed: int = 0
    position: int = 0
    keepout: int = 0
    keepout_inherited: int = 0
    velocity: int = 0
    min_keepout_margin: float = math.inf  # m; negative means overlap
    worst: dict[str, str] = field(default_factory=dict)  # first example of each kind

    @property
    def violations(self) -> int:
        return self.malformed + self.position + self.keepout


class CommandChecker:
    """Checks joint position commands (in `limits.names` order) one at a time."""

    def __init__(
        self,
        robot: RobotModel,
        limits: JointLimits,
        control_dt: float,
        *,
        tol_rad: float = 1e-6,
        tol_m: float = 1e-4,
        velocity_rel_tol: float = 1e-3,
    ) -> None:
        if list(robot.joint_names) != list(limits.names):
            raise ValueError(
                f"robot joints {robot.joint_names} and limit joints {limits.names} differ"
            )
        if not (math.isfinite(control_dt) and control_dt > 0):
            raise ValueError(f"control_dt must be positive, got {control_dt}")
        self.robot = robot
        self.limits = limits
        self.dt = float(control_dt)
        self.tol_rad = float(tol_rad)
        self.tol_m = float(tol_m)
        self.velocity_rel_tol = float(velocity_rel_tol)
        self._moving = np.asarray(robot.moving, dtype=bool)
        self._radii = np.asarray(robot.sphere_radii, dtype=np.float64)[self._moving]
        self._groups = [g for g, m in zip(robot.sphere_groups, self._moving, strict=True) if m]
        self._centres = np.zeros((0, 3))
        self._obstacle_radii = np.zeros(0)
        self._names: list[str] = []
        self._inherited = False
        self._check_inherited = False
        self._prev: np.ndarray | None = None
        self.counts = CheckCounts()

    @classmethod
    def from_params(
        cls,
        urdf: str,
        joint_names: Sequence[str],
        *,
        position_margin: float,
        velocity_scale: float,
        acceleration_scale: float,
        jerk_scale: float,
        control_rate_hz: float,
    ) -> CommandChecker:
        """The checker for a controller running with these parameters on this URDF."""
        from diffusion_controller.control.limits import tighten

        robot = RobotModel.from_urdf(urdf, joint_names=list(joint_names))
        limits = tighten(
            robot.urdf_limits(), position_margin, velocity_scale, acceleration_scale, jerk_scale
        )
        return cls(robot, limits, 1.0 / float(control_rate_hz))

    def set_keepout(self, spheres: Sequence[Sphere]) -> None:
        """The keep-out spheres the controller has from now on."""
        self._centres = np.array([np.asarray(s.center, dtype=np.float64) for s in spheres])
        self._centres = self._centres.reshape(-1, 3)
        self._obstacle_radii = np.array([float(s.radius) for s in spheres], dtype=np.float64)
        self._names = [s.name for s in spheres]
        self._check_inherited = True  # decided on the next command

    def new_episode(self) -> None:
        """Forget the previous command (the arm was reset: no velocity across the gap) and start
        counting afresh."""
        self._prev = None
        self._inherited = False
        self.counts = CheckCounts()

    def check(self, q: Sequence[float]) -> list[str]:
        """Check one command; returns the kinds it counted under (empty when clean)."""
        c = self.counts
        c.commands += 1
        try:
            arr = np.asarray(q, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        n = len(self.limits.names)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            c.malformed += 1
            c.worst.setdefault("malformed", f"{arr.size} values, finite={np.isfinite(arr).all()}")
            self._prev = None
            return ["malformed"]
        kinds: list[str] = []
        lim = self.limits
        out = (arr < lim.lower - self.tol_rad) | (arr > lim.upper + self.tol_rad)
        if out.any():
            c.position += 1
            j = int(np.argmax(out))
            c.worst.setdefault(
                "position",
                f"{lim.names[j]}={arr[j]:.4f} not in [{lim.lower[j]:.4f}, {lim.upper[j]:.4f}]",
            )
            kinds.append("position")
        if self._prev is not None:
            speed = np.abs(arr - self._prev) / self.dt
            fast = speed > lim.velocity * (1.0 + self.velocity_rel_tol) + 1e-6
            if fast.any():
                c.velocity += 1
                j = int(np.argmax(fast))
                c.worst.setdefault(
                    "velocity", f"{lim.names[j]} at {speed[j]:.3f} rad/s > {lim.velocity[j]:.3f}"
                )
                kinds.append("velocity")
        self._prev = arr
        if self._centres.shape[0]:
            kinds += self._check_keepout(arr)
        return kinds

    def check_point(self, q: Sequence[float], v: Sequence[float] | None = None,
                    prev: tuple[np.ndarray, float] | None = None, t: float = 0.0) -> list[str]:
        """Check one point of a streamed trajectory at time `t`: as check() for position and
        keep-out; for velocity its own `v` and, given the message's previous point `prev`
        (positions, time), the mean velocity between the two. Successive calls need not be
        one control period apart."""
        self._prev = None  # no difference across calls: messages overlap in time
        kinds = self.check(q)
        self._prev = None
        if "malformed" in kinds:
            return kinds
        arr = np.asarray(q, dtype=np.float64).reshape(-1)
        lim = self.limits
        speeds = []
        if v is not None:
            va = np.asarray(v, dtype=np.float64).reshape(-1)
            if va.shape == arr.shape:
                speeds.append(np.abs(va))
        if prev is not None and t > prev[1]:
            speeds.append(np.abs(arr - prev[0]) / (t - prev[1]))
        for speed in speeds:
            fast = speed > lim.velocity * (1.0 + self.velocity_rel_tol) + 1e-6
            if fast.any():
                self.counts.velocity += 1
                j = int(np.argmax(fast))
                self.counts.worst.setdefault(
                    "velocity", f"{lim.names[j]} at {speed[j]:.3f} rad/s > {lim.velocity[j]:.3f}"
                )
                kinds.append("velocity")
                break
        return kinds

    def _check_keepout(self, q: np.ndarray) -> list[str]:
        c = self.counts
        pos = self.robot.sphere_positions(q)[self._moving]
        dist = np.linalg.norm(pos[:, None, :] - self._centres[None, :, :], axis=2)
        margin = dist - self._radii[:, None] - self._obstacle_radii[None, :]
        worst = float(margin.min())
        overlap = worst < -self.tol_m
        if self._check_inherited:
            self._check_inherited = False
            self._inherited = overlap
        if not overlap:
            self._inherited = False
            c.min_keepout_margin = min(c.min_keepout_margin, worst)
            return []
        if self._inherited:
            c.keepout_inherited += 1
            return ["keepout_inherited"]
        c.min_keepout_margin = min(c.min_keepout_margin, worst)
        c.keepout += 1
        i, k = np.unravel_index(int(np.argmin(margin)), margin.shape)
        c.worst.setdefault(
            "keepout", f"{self._groups[i]} sphere {-worst * 1e3:.1f} mm into {self._names[k]}"
        )
        return ["keepout"]
