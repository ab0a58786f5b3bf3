"""SafetyConfig, its validation, and which of its fields may change while the filter runs.

Its settings fields carry the parameter names and take their defaults and ranges from the table
(diffusion_controller/settings/controller.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from diffusion_controller.control.types import Sphere
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.spec import check_fields


@dataclass
class SafetyConfig:
    """Safety filter settings. Units: metres, radians, seconds.

    The fields up to `self_collision_pairs` are the controller settings of the same names
    (diffusion_controller/settings/controller.py): their defaults, ranges, units and meaning are
    written there, not here, and they are checked against that table; build one from settings
    values with control.assembly.safety_config(values). The core holds three of them in its own
    form: `obstacles` as spheres, `self_collision_pairs` as (link, link) tuples, the workspace
    corners as tuples (None switches the box off, as None for `table_z` does the table). The
    fields after them are the filter's own tuning, which no deployment sets."""

    control_rate_hz: float
    """Tick rate of the commanded double integrator (dt = 1 / control_rate_hz)."""
    safety_mode: str
    """"cbf": one-step QP over the next acceleration; "mpc": QP over `mpc_horizon` accelerations."""
    mpc_horizon: int
    """MPC horizon in ticks (ignored in CBF mode)."""
    mpc_inputs: int
    """MPC: distinct accelerations per joint over the horizon (move blocking): the first tick's
    own, then blocks that share one; `mpc_horizon` gives one per tick. Fewer make a smaller QP."""
    position_margin: float
    """Radians kept clear of each URDF position limit."""
    velocity_scale: float
    """Fraction of the URDF velocity limit the filter may command."""
    acceleration_scale: float
    """Fraction of the acceleration limit (URDF or datasheet); braking uses this deceleration."""
    jerk_scale: float
    """Fraction of the jerk limit; jerk yields when it conflicts with braking or other limits."""
    workspace_min: tuple[float, float, float] | None
    """Lower xyz corner of the box every link sphere must stay in (base frame); None: no box."""
    workspace_max: tuple[float, float, float] | None
    """Upper xyz corner of that box; None: no box."""
    table_z: float | None
    """Height of the table plane: moving spheres stay above table_z + radius; None: no table."""
    obstacles: list[Sphere]
    """Keep-out spheres (base frame); change them while running with set_obstacles()."""
    sphere_margin: float
    """Extra clearance (m) added to every Cartesian barrier; also covers motion between ticks."""
    self_collision_pairs: list[tuple[str, str]] | None
    """Pairs of sphere groups (link names) kept apart; None or []: none."""
    barrier_gamma: float = 0.1
    """Discrete CBF decay in (0, 1]: B(x+) >= (1 - gamma) B(x); smaller approaches more gently."""
    singularity: tuple[float, float] = (0.02, 0.005)
    """Yoshikawa manipulability where slow-down starts and where motion towards it stops."""
    tracking_kp: float = 400.0
    """Position gain (1/s^2) of the desired acceleration towards the reference."""
    tracking_kd: float = 40.0
    """Velocity gain (1/s) of the desired acceleration."""
    joint_weights: tuple[float, ...] | None = None
    """Per-joint weights of the tracking cost; None: all 1."""
    jerk_weight: float = 1e-3
    """Weight of (u - a_prev)^2 relative to tracking: smooths the command."""
    mpc_position_weight: float = 1e5
    """MPC: weight of position error over the horizon."""
    mpc_velocity_weight: float = 1e2
    """MPC: weight of velocity error over the horizon."""
    mpc_acceleration_weight: float = 1.0
    """MPC: weight of acceleration away from the reference acceleration."""
    eps_abs: float = 1e-2
    """OSQP absolute tolerance. Rows are in rad/s^2 (1e-2 moves a position by 5e-7 rad in a
    tick), and every solution is checked and repaired exactly, so a loose tolerance is safe."""
    eps_rel: float = 1e-2
    """OSQP relative tolerance."""
    max_iter: int = 250
    """OSQP iteration cap; reaching it counts as a solver failure (brake)."""
    time_limit: float = 0.0
    """OSQP time limit in seconds (0: none); reaching it counts as a solver failure (brake)."""
    intervention_tolerance: float = 0.05
    """rad/s^2: a command further than this from the unconstrained one counts as intervention."""
    barrier_slots: int = 24
    """QP rows for Cartesian barriers per step: the non-redundant ones, most critical first.
    Every barrier row is still checked after the solve; this only bounds the QP's size."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The settings against the table; what spans fields, and the tuning, here."""
        check_fields(self, SPECS)

        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"SafetyConfig.{name} must be a positive number, got {value!r}")

        for name in ("tracking_kp", "tracking_kd", "eps_abs", "eps_rel", "mpc_position_weight",
                     "mpc_velocity_weight", "mpc_acceleration_weight", "intervention_tolerance"):
            positive(name)
        if self.mpc_inputs > self.mpc_horizon:
            raise ValueError(f"SafetyConfig.mpc_inputs {self.mpc_inputs} must not exceed "
                             f"mpc_horizon {self.mpc_horizon}")
        if not isinstance(self.barrier_slots, int) or not 1 <= self.barrier_slots <= 1000:
            raise ValueError("SafetyConfig.barrier_slots must be an int in [1, 1000]")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError("SafetyConfig.max_iter must be a positive int")
        if not math.isfinite(self.time_limit) or self.time_limit < 0:
            raise ValueError("SafetyConfig.time_limit must be >= 0 (0: none)")
        if not math.isfinite(self.barrier_gamma) or not 0 < self.barrier_gamma <= 1:
            raise ValueError("SafetyConfig.barrier_gamma must be in (0, 1]")
        if not math.isfinite(self.jerk_weight) or self.jerk_weight < 0:
            raise ValueError("SafetyConfig.jerk_weight must be finite and >= 0")
        sing = tuple(float(x) for x in self.singularity)
        if len(sing) != 2 or not all(math.isfinite(x) and x >= 0 for x in sing):
            raise ValueError("SafetyConfig.singularity must be (slow_down, stop) >= 0")
        if not sing[0] > sing[1]:
            raise ValueError("SafetyConfig.singularity: slow-down threshold must exceed stop")
        if self.joint_weights is not None:
            w = np.asarray(self.joint_weights, dtype=np.float64)
            if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise ValueError("SafetyConfig.joint_weights must be positive finite values")


# The settings that fix the tightened limits: a change builds a new filter, which takes over the
# commanded state between two ticks (the node does so for these live settings).
LIMIT_FIELDS = frozenset({"position_margin", "velocity_scale", "acceleration_scale", "jerk_scale"})
# The filter's own tuning that may change while it runs (no QP structure depends on it).
_LIVE_TUNING = frozenset({
    "barrier_gamma", "singularity", "tracking_kp", "tracking_kd", "jerk_weight", "eps_abs",
    "eps_rel", "max_iter", "time_limit", "intervention_tolerance",
})
# Fields update_config() takes while the filter runs: the settings the table calls live, except
# those that fix the limits, and the live tuning.
LIVE_FIELDS = frozenset(
    f.name for f in fields(SafetyConfig) if f.name in SPECS and SPECS[f.name].live
) - LIMIT_FIELDS | _LIVE_TUNING


def _vec(value: object, n: int, name: str) -> tuple[np.ndarray | None, str]:
    """A finite float vector of length n, or (None, why not)."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None, f"{name} is not numeric"
    if arr.shape != (n,):
        return None, f"{name} has {arr.shape[0]} values, expected {n}"
    if not math.isfinite(arr.sum()):  # a NaN or an Inf anywhere makes the sum non-finite
        if np.all(np.isfinite(arr)):  # only overflow of a huge but finite sum
            return arr, ""
        return None, f"{name} is not finite"
    return arr, ""
