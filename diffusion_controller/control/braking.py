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
    q = np.asarray(q, dtype=np.float64)
    bounds = UpperBounds(np.broadcast_to(top, q.shape), np.broadcast_to(b, q.shape), dt)
    return bounds(q, np.asarray(v, dtype=np.float64)).copy()


class UpperBounds:
    """`upper_bounds` for fixed tops, decelerations and dt, evaluated into preallocated buffers
    (the filter calls it every tick on [q, -q]: a dozen numpy calls, no allocations)."""

    def __init__(self, top: np.ndarray, b: np.ndarray, dt: float) -> None:
        self.top = np.array(top, dtype=np.float64)
        self.b = np.array(b, dtype=np.float64)
        self.dt = float(dt)
        m = self.top.shape
        b, dt = self.b, self.dt
        self._two_b = 2.0 * b
        # near rest: x = sqrt(b^2 dt^2 + 2 b r) - b dt ; faster: x = sqrt(2 b r) - b dt / 2
        self._sq_shift = np.stack([b * b * dt * dt, np.zeros(m)])
        self._sq_sub = np.stack([b * dt, 0.5 * b * dt])
        self._quarter = 0.25 * b * dt
        self._inf_top = np.isposinf(self.top)
        self._any_inf = bool(self._inf_top.any())
        self._room = np.empty(m)
        self._tmp = np.empty(m)
        self._x = np.empty((2, *m))
        self._near = np.empty(m, dtype=bool)

    def __call__(self, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The bounds for positions q and velocities v; a buffer the next call overwrites."""
        dt = self.dt
        room, tmp, x = self._room, self._tmp, self._x
        # room left if the tick ends exactly at zero velocity (u = -v/dt): q+ = q + v dt/2; a
        # tick ending at x = v+ >= 0 uses x dt/2 more, then the stop takes stop_distance(x)
        np.subtract(self.top, q, out=room)
        np.multiply(v, 0.5 * dt, out=tmp)
        np.subtract(room, tmp, out=room)
        # near rest: x^2/(2b) + x dt <= room ; faster: x^2/(2b) + x dt/2 + b dt^2/8 <= room
        np.maximum(room, 0.0, out=tmp)
        np.multiply(tmp, self._two_b, out=tmp)
        np.add(tmp, self._sq_shift, out=x)
        np.sqrt(x, out=x)
        np.subtract(x, self._sq_sub, out=x)
        slow, out = x[0], x[1]
        np.less_equal(slow, self._quarter, out=self._near)
        np.copyto(out, slow, where=self._near)
        np.subtract(out, v, out=out)
        np.multiply(out, 1.0 / dt, out=out)
        if not room.min() >= 0.0:  # (also for NaN) ending the tick moving away instead
            away = 2.0 * (self.top - q - v * dt) / (dt * dt)
            np.copyto(out, away, where=~(room >= 0.0))
        if self._any_inf:
            np.copyto(out, np.inf, where=self._inf_top)
        return out
