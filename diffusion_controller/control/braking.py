"""The braking model every guarantee of the safety filter rests on.

Braking means: each joint decelerates at its limit b towards zero velocity, and in the tick where
it would cross zero it lands exactly on zero (acceleration -v/dt). Integrated exactly as the
filter's double integrator, a joint at velocity v then travels at most

    v^2 / (2 b) + min(|v| dt / 2, b dt^2 / 8)

(the second term bounds what the last, partial tick adds; the |v| dt / 2 form keeps the bound
tight near rest, so a joint held against a limit settles instead of chattering), always in the
direction of v. The position limits, and the Cartesian barriers, only admit states from which
this stop fits.
"""

from __future__ import annotations

import numpy as np


def brake_acceleration(v: np.ndarray, b: np.ndarray, dt: float) -> np.ndarray:
    """Acceleration of the braking profile for one tick: -sign(v) min(b, |v|/dt)."""
    return -np.sign(v) * np.minimum(b, np.abs(v) / dt)


def stop_distance(v: np.ndarray, b: np.ndarray, dt: float) -> np.ndarray:
    """Upper bound on |displacement| while braking from velocity v (always along sign(v))."""
    return v * v / (2.0 * b) + np.minimum(np.abs(v) * dt / 2.0, b * dt * dt / 8.0)


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

    Upper side: with q+ = q + v dt + u dt^2/2 and v+ = v + u dt, the stop position
    q+ + stop_distance(max(v+, 0)) is increasing in u, so the admissible set is (-inf, u_hi];
    solved in closed form. The lower side is the upper side of the mirrored joint. Infinite
    limits give infinite bounds. The interval is empty (lo > hi) only if the state itself cannot
    stop inside the limits.
    """
    n = len(q)
    out = upper_bounds(np.concatenate((q, -q)), np.concatenate((v, -v)),
                       np.concatenate((upper, -lower)), np.concatenate((b, b)), dt)
    return -out[n:], out[:n]


def upper_bounds(
    q: np.ndarray, v: np.ndarray, top: np.ndarray, b: np.ndarray, dt: float
) -> np.ndarray:
    """Largest u per entry after which braking stops at or below `top` (one-sided form of
    `viability_bounds`, vectorised over any number of joints)."""
    # room left if the tick ends exactly at zero velocity (u = -v/dt): q+ = q + v dt/2; a tick
    # ending at x = v+ >= 0 uses x dt/2 more, then the stop takes stop_distance(x)
    room = top - q - 0.5 * v * dt
    r = np.maximum(room, 0.0)
    # near rest: x^2/(2b) + x dt <= room ; faster: x^2/(2b) + x dt/2 + b dt^2/8 <= room
    slow = b * (np.sqrt(dt * dt + 2.0 * r / b) - dt)
    fast = np.sqrt(2.0 * b * r) - 0.5 * b * dt
    x = np.where(slow <= 0.25 * b * dt, slow, fast)
    # ending the tick moving away (v+ < 0) instead: q + v dt + u dt^2/2 <= top
    out = np.where(room >= 0.0, (x - v) / dt, 2.0 * (top - q - v * dt) / (dt * dt))
    return np.where(top == np.inf, np.inf, out)
