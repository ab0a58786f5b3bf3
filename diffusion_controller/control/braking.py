"""The braking model every guarantee of the safety filter rests on.

Braking means: each joint decelerates at its limit b towards zero velocity, and in the tick where
it would cross zero it lands exactly on zero (acceleration -v/dt). Integrated exactly as the
filter's double integrator, a joint at velocity v then travels at most

    v^2 / (2 b) + b dt^2 / 8

(the second term is the most the last, partial tick adds), always in the direction of v. The
position limits, and the Cartesian barriers, only admit states from which this stop fits.
"""

from __future__ import annotations

import numpy as np


def brake_acceleration(v: np.ndarray, b: np.ndarray, dt: float) -> np.ndarray:
    """Acceleration of the braking profile for one tick: -sign(v) min(b, |v|/dt)."""
    return -np.sign(v) * np.minimum(b, np.abs(v) / dt)


def stop_distance(v: np.ndarray, b: np.ndarray, dt: float) -> np.ndarray:
    """Upper bound on |displacement| while braking from velocity v (always along sign(v))."""
    return v * v / (2.0 * b) + b * dt * dt / 8.0


def viability_bounds(
    q: np.ndarray,
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    b: np.ndarray,
    dt: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint interval of this tick's acceleration u after which braking still stops inside
    [lower, upper].

    Upper side: f(u) = q+ + max(v+, 0)^2 / (2b) with q+ = q + v dt + u dt^2/2, v+ = v + u dt is
    increasing in u, so {f(u) <= upper - b dt^2/8} is (-inf, u_hi]; solved in closed form. The
    lower side mirrors it. Infinite limits give infinite bounds. The interval can be empty (then
    lo > hi) only if the state itself cannot stop inside the limits.
    """
    slack = b * dt * dt / 8.0
    u_hi = _upper_bound(q, v, upper - slack, b, dt)
    u_lo = -_upper_bound(-q, -v, -(lower + slack), b, dt)
    return u_lo, u_hi


def _upper_bound(
    q: np.ndarray, v: np.ndarray, top: np.ndarray, b: np.ndarray, dt: float
) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        # room left if the tick ends exactly at zero velocity (u = -v/dt): q+ = q + v dt/2
        room = top - q - 0.5 * v * dt
        # ending the tick with x = v+ >= 0: x^2/(2b) + x dt/2 <= room
        x = b * (-0.5 * dt + np.sqrt(0.25 * dt * dt + 2.0 * np.maximum(room, 0.0) / b))
        moving_on = (x - v) / dt
        # ending the tick moving away (v+ < 0): q + v dt + u dt^2/2 <= top
        turning = 2.0 * (top - q - v * dt) / (dt * dt)
        out = np.where(room >= 0.0, moving_on, turning)
    return np.where(np.isposinf(top), np.inf, out)
