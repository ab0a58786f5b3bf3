"""Value types shared across the control core: chunks in, commands out, limits, spheres, results.

Kept in one small module so the scheduler, the safety filter, the loop and the ROS adapter agree on
shapes and units without importing each other. Units: radians, seconds, metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """Joint position targets `positions[k]` for times `t0 + k * dt`.

    `t0` is the stamp of the observation the chunk was computed from, on the same clock as the
    loop's `clock()`; `seq` increases with every chunk the inference side produces.
    """

    t0: float
    dt: float
    positions: np.ndarray  # [H, J]
    seq: int = 0

    @property
    def horizon(self) -> int:
        return int(self.positions.shape[0])

    @property
    def t_end(self) -> float:
        return self.t0 + (self.horizon - 1) * self.dt

    def times(self) -> np.ndarray:
        return self.t0 + self.dt * np.arange(self.horizon)


@dataclass(frozen=True)
class Command:
    """What leaves the control core for the arm: one safety-filtered joint state per tick."""

    stamp: float
    positions: np.ndarray  # [J]
    velocities: np.ndarray  # [J]
    accelerations: np.ndarray  # [J]
    # What the filter certified beyond this tick, for a streaming trajectory output: [K, 3, J]
    # (q, v, a) at stamp + k * period, k = 1..K, the braking-viable continuation; None when not
    # asked for (ControlLoop.plan_steps = 0).
    plan: np.ndarray | None = None


@dataclass(frozen=True)
class Sphere:
    """A ball in the robot's base frame: a keep-out obstacle, or a collision sphere on a link."""

    center: np.ndarray  # [3]
    radius: float
    name: str = ""


@dataclass
class JointLimits:
    """Effective per-joint limits after tightening: what the filter guarantees."""

    names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        for attr in ("lower", "upper", "velocity", "acceleration", "jerk"):
            arr = np.asarray(getattr(self, attr), dtype=np.float64).reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"JointLimits.{attr} has {arr.shape[0]} values for {n} joints")
            setattr(self, attr, arr)
        if np.any(self.lower >= self.upper):
            raise ValueError("JointLimits: every lower limit must be below its upper limit")
        for attr in ("velocity", "acceleration", "jerk"):
            if np.any(getattr(self, attr) <= 0):
                raise ValueError(f"JointLimits.{attr} must be positive")


@dataclass
class FilterResult:
    """The safety filter's answer for one tick: the commanded state after the tick, and why."""

    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    status: str  # "ok" | "braking" | "holding"
    intervened: bool = False  # the command differs from the reference by more than a tolerance
    reason: str = ""  # why it braked or intervened (infeasible, solver failure, bad input...)
    iterations: int = 0
    solve_ms: float = 0.0
    active_constraints: int = 0
    details: dict[str, float] = field(default_factory=dict)
