"""Tightening of joint limits: the filter's guarantees are stated against the tightened limits,
so that tracking error of the arm's own controller, sensor noise and model error stay inside the
hardware limits."""

from __future__ import annotations

import math

import numpy as np

from diffusion_controller.control.types import JointLimits


def _scale(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def tighten(
    limits: JointLimits,
    position_margin: float | np.ndarray = 0.0,
    velocity_scale: float = 1.0,
    acceleration_scale: float = 1.0,
    jerk_scale: float = 1.0,
) -> JointLimits:
    """Shrink the position range by `position_margin` (rad, scalar or per joint) on each side and
    scale velocity, acceleration and jerk limits by factors in (0, 1].

    Raises ValueError for a negative or non-finite margin, a scale outside (0, 1], or a margin
    that leaves no room between a joint's lower and upper limit.
    """
    margin = np.broadcast_to(np.asarray(position_margin, dtype=np.float64), limits.lower.shape)
    if not np.all(np.isfinite(margin)) or np.any(margin < 0):
        raise ValueError("position_margin must be finite and non-negative")
    vs = _scale("velocity_scale", velocity_scale)
    as_ = _scale("acceleration_scale", acceleration_scale)
    js = _scale("jerk_scale", jerk_scale)
    lower = limits.lower + margin
    upper = limits.upper - margin
    narrow = [n for n, lo, hi in zip(limits.names, lower, upper, strict=False) if not lo < hi]
    if narrow:
        raise ValueError(f"position_margin leaves no range for joints {narrow}")
    return JointLimits(
        names=list(limits.names),
        lower=lower,
        upper=upper,
        velocity=limits.velocity * vs,
        acceleration=limits.acceleration * as_,
        jerk=limits.jerk * js,
    )
