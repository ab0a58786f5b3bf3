"""C2 joint-space references from action chunks: splines built once per chunk, evaluated per tick.

A chunk is a handful of joint targets 0.05-0.1 s apart; the loop needs (q, v, a) every 10 ms with
no step in any of the three, because the safety filter tracks acceleration and a step there is a
jerk spike at the arm. The reference is therefore assembled from three C2-joined pieces, each a
polynomial in local time stored as coefficients so one evaluation is a single small matmul:

* a quintic *transition* from the state the reference is in now (q, v, a) onto the chunk's spline,
* a cubic spline through the chunk's remaining points (C2, "not-a-knot" at the start, natural at
  the end so the acceleration is zero where the data runs out),
* a quartic *stop* that brings the velocity to zero with zero final acceleration.

Everything is vectorised over joints; coefficients are computed when a chunk is accepted, never per
tick.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

_DEG = 6  # coefficients per segment: c0..c5 in local time


@dataclass(frozen=True)
class State:
    """A reference state at time `t`: positions, velocities and accelerations, [J] each."""

    t: float
    q: np.ndarray
    v: np.ndarray
    a: np.ndarray


def _basis(tau: float) -> np.ndarray:
    """Rows: d^k/dtau^k of [1, tau, ..., tau^5] for k = 0, 1, 2, 3 at one local time."""
    t2 = tau * tau
    t3 = t2 * tau
    t4 = t3 * tau
    return np.array(
        (
            (1.0, tau, t2, t3, t4, t4 * tau),
            (0.0, 1.0, 2.0 * tau, 3.0 * t2, 4.0 * t3, 5.0 * t4),
            (0.0, 0.0, 2.0, 6.0 * tau, 12.0 * t2, 20.0 * t3),
            (0.0, 0.0, 0.0, 6.0, 24.0 * tau, 60.0 * t2),
        )
    )


# d^k/dt^k t^m = _FALLING[k, m] * t^(m - k): falling factorials, zero where m < k
_POWERS = np.arange(_DEG)
_FALLING = np.array(
    [[math.perm(m, k) if m >= k else 0 for m in range(_DEG)] for k in range(4)], dtype=np.float64
)
_EXPONENTS = np.maximum(_POWERS[None, :] - np.arange(4)[:, None], 0)
# Taylor shift p(tau + delta): new c_k = sum_m C(m, k) delta^(m - k) c_m
_BINOM = np.array([[math.comb(m, k) for m in range(_DEG)] for k in range(_DEG)], dtype=np.float64)
_SHIFT_EXP = np.maximum(_POWERS[None, :] - _POWERS[:, None], 0)


def _basis_many(tau: np.ndarray, order: int) -> np.ndarray:
    """[N, 6] derivative `order` (0..3) of the monomial basis at many local times."""
    tau = np.asarray(tau, dtype=np.float64)[:, None]
    return _FALLING[order] * tau ** _EXPONENTS[order]


def quintic(
    q0: np.ndarray,
    v0: np.ndarray,
    a0: np.ndarray,
    q1: np.ndarray,
    v1: np.ndarray,
    a1: np.ndarray,
    duration: float | np.ndarray,
) -> np.ndarray:
    """Coefficients [..., 6, J] of the quintic joining (q0, v0, a0) to (q1, v1, a1) in `duration`.

    `duration` may be an array [M] (candidates evaluated together), in which case the end states
    are [M, J] or broadcastable to it and the result is [M, 6, J].
    """
    T = np.asarray(duration, dtype=np.float64)[..., None]
    T2 = T * T
    T3 = T2 * T
    dq = q1 - q0 - v0 * T - 0.5 * a0 * T2
    dv = v1 - v0 - a0 * T
    da = a1 - a0
    c3 = (10.0 * dq - 4.0 * dv * T + 0.5 * da * T2) / T3
    c4 = (-15.0 * dq + 7.0 * dv * T - da * T2) / (T3 * T)
    c5 = (6.0 * dq - 3.0 * dv * T + 0.5 * da * T2) / (T3 * T2)
    shape = np.broadcast_shapes(c3.shape, np.shape(q0))
    out = np.empty((*shape[:-1], _DEG, *shape[-1:]))
    out[..., 0, :] = q0
    out[..., 1, :] = v0
    out[..., 2, :] = 0.5 * a0
    out[..., 3, :] = c3
    out[..., 4, :] = c4
    out[..., 5, :] = c5
    return out


def max_abs_jerk(coeffs: np.ndarray, duration: float | np.ndarray) -> np.ndarray:
    """Largest |jerk| per joint of polynomial segments [..., 6, J] over [0, duration].

    Jerk of a quintic is the quadratic 6 c3 + 24 c4 t + 60 c5 t^2, so its extremes are at the
    ends or at the vertex: exact, and cheap enough to scan many candidate durations at once.
    """
    T = np.asarray(duration, dtype=np.float64)[..., None]
    c3, c4, c5 = coeffs[..., 3, :], coeffs[..., 4, :], coeffs[..., 5, :]
    j0 = np.abs(6.0 * c3)
    j1 = np.abs(6.0 * c3 + 24.0 * c4 * T + 60.0 * c5 * T * T)
    with np.errstate(divide="ignore", invalid="ignore"):
        tv = np.where(c5 != 0.0, -24.0 * c4 / (120.0 * c5), -1.0)
    inside = (tv > 0.0) & (tv < T)
    jv = np.where(inside, np.abs(6.0 * c3 + 24.0 * c4 * tv + 60.0 * c5 * tv * tv), 0.0)
    return np.maximum(np.maximum(j0, j1), jv)


def stop_duration(
    v: np.ndarray,
    a: np.ndarray,
    stop_acceleration: np.ndarray,
    stop_jerk: np.ndarray,
    minimum: float = 0.05,
) -> float:
    """Duration of the synchronised stop from (v, a) that respects the given acc/jerk bounds.

    For the cubic-Hermite velocity profile used by `stop_coefficients`, peak |acc| is at most
    1.5 |v|/T + |a| and peak |jerk| at most 6 |v|/T^2 + 4 |a|/T; T is picked so each term takes at
    most its share of the bound. All joints use the slowest joint's duration.
    """
    v = np.abs(v)
    a = np.abs(a)
    t_acc = 3.0 * v / stop_acceleration
    t_jerk_v = np.sqrt(12.0 * v / stop_jerk)
    t_jerk_a = 8.0 * a / stop_jerk
    t = np.maximum(np.maximum(t_acc, t_jerk_v), t_jerk_a)
    return float(max(minimum, float(np.max(t)) if t.size else minimum))


def stop_coefficients(q: np.ndarray, v: np.ndarray, a: np.ndarray, duration: float) -> np.ndarray:
    """Coefficients [6, J] taking (q, v, a) to rest in `duration`, ending with zero acceleration.

    The velocity follows the cubic Hermite from (v, a) to (0, 0), so the end position is
    q + v T / 2 + a T^2 / 12 and the profile is a quartic (c5 = 0).
    """
    T = float(duration)
    q_end = q + 0.5 * v * T + a * (T * T / 12.0)
    zero = np.zeros_like(q)
    return quintic(q, v, a, q_end, zero, zero, T)


class PiecewisePolynomial:
    """Segments of degree <= 5 in local time, vectorised over joints, held after the last break.

    `breaks` [n+1] are absolute times; `coeffs` [n, 6, J] are in t - breaks[i]. Before the first
    break the state at the first break is returned; after the last break the end position with
    zero velocity and acceleration (every reference built here ends at rest).
    """

    __slots__ = ("_cache", "_end_state", "breaks", "coeffs")

    def __init__(self, breaks: np.ndarray, coeffs: np.ndarray) -> None:
        breaks = np.asarray(breaks, dtype=np.float64)
        coeffs = np.asarray(coeffs, dtype=np.float64)
        if coeffs.ndim != 3 or coeffs.shape[1] != _DEG:
            raise ValueError(f"coeffs must be [n, {_DEG}, J], got {coeffs.shape}")
        if breaks.shape != (coeffs.shape[0] + 1,):
            raise ValueError("breaks must have one more entry than there are segments")
        if not np.all(np.isfinite(breaks)) or not np.all(np.isfinite(coeffs)):
            raise ValueError("non-finite spline breaks or coefficients")
        if np.any(np.diff(breaks) <= 0.0):
            raise ValueError("spline breaks must increase strictly")
        self.breaks = breaks
        self.coeffs = coeffs
        self._cache = 0
        self._end_state: np.ndarray | None = None

    @property
    def joint_count(self) -> int:
        return int(self.coeffs.shape[2])

    @property
    def start(self) -> float:
        return float(self.breaks[0])

    @property
    def end(self) -> float:
        return float(self.breaks[-1])

    def _eval_segment(self, i: int, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = _basis(tau)[:3] @ self.coeffs[i]
        return r[0], r[1], r[2]

    def _segment(self, t: float) -> int:
        b = self.breaks
        i = self._cache
        if b[i] <= t < b[i + 1]:
            return i
        if i + 2 < b.shape[0] and b[i + 1] <= t < b[i + 2]:
            self._cache = i + 1
            return i + 1
        i = int(np.searchsorted(b, t, side="right")) - 1
        i = min(max(i, 0), self.coeffs.shape[0] - 1)
        self._cache = i
        return i

    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, v, a) at absolute time t: one basis row build and one [3, 6] @ [6, J] product."""
        b = self.breaks
        if t <= b[0]:
            return self._eval_segment(0, 0.0)
        if t > b[-1]:
            if self._end_state is None:
                self._end_state = self._eval_segment(self.coeffs.shape[0] - 1, b[-1] - b[-2])[0]
            z = np.zeros(self.coeffs.shape[2])
            return self._end_state.copy(), z, z.copy()
        if t == b[-1]:
            return self._eval_segment(self.coeffs.shape[0] - 1, b[-1] - b[-2])
        i = self._segment(t)
        return self._eval_segment(i, t - b[i])

    def sample(self, times: np.ndarray, order: int = 0) -> np.ndarray:
        """Derivative `order` (0..3) at many times, [N, J]; same clamping as `evaluate`."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        b = self.breaks
        clamped = np.clip(times, b[0], b[-1])
        idx = np.clip(np.searchsorted(b, clamped, side="right") - 1, 0, self.coeffs.shape[0] - 1)
        tau = clamped - b[idx]
        basis = _basis_many(tau, order)  # [N, 6]
        out = np.einsum("nk,nkj->nj", basis, self.coeffs[idx])
        if order > 0:
            out[times > b[-1]] = 0.0
        return out

    def sample_states(self, times: np.ndarray) -> np.ndarray:
        """Positions, velocities and accelerations at many times at once, [3, N, J]."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        b = self.breaks
        clamped = np.clip(times, b[0], b[-1])
        idx = np.clip(np.searchsorted(b, clamped, side="right") - 1, 0, self.coeffs.shape[0] - 1)
        tau = clamped - b[idx]
        basis = _FALLING[:3, None, :] * tau[None, :, None] ** _EXPONENTS[:3, None, :]  # [3, N, 6]
        out = np.einsum("knm,nmj->knj", basis, self.coeffs[idx])
        out[1:, times > b[-1]] = 0.0
        return out

    def after(self, t: float) -> PiecewisePolynomial | None:
        """The part from time t on (re-expanded about t), or None when t is at or past the end."""
        b = self.breaks
        if t >= b[-1] - 1e-9:
            return None
        if t <= b[0]:
            return self
        i = int(np.searchsorted(b, t, side="right")) - 1
        if b[i + 1] - t < 1e-9:
            return PiecewisePolynomial(b[i + 1 :], self.coeffs[i + 1 :])
        head = _shift(self.coeffs[i], t - b[i])
        breaks = np.concatenate(([t], b[i + 1 :]))
        return PiecewisePolynomial(breaks, np.concatenate((head[None], self.coeffs[i + 1 :])))

    def max_jerk(self, t_from: float | None = None) -> np.ndarray:
        """Largest |jerk| per joint over the segments that end after `t_from` (all by default)."""
        lengths = np.diff(self.breaks)
        keep = np.ones(lengths.shape[0], dtype=bool)
        if t_from is not None:
            keep = self.breaks[1:] > t_from
        if not np.any(keep):
            return np.zeros(self.coeffs.shape[2])
        return np.max(max_abs_jerk(self.coeffs[keep], lengths[keep]), axis=0)


def _shift(coeffs: np.ndarray, delta: float) -> np.ndarray:
    """Coefficients [6, J] of p(tau + delta) given those of p(tau) (Taylor shift)."""
    return (_BINOM * float(delta) ** _SHIFT_EXP) @ coeffs


def concatenate(parts: list[PiecewisePolynomial]) -> PiecewisePolynomial:
    """Join pieces that meet end-to-start in time (the caller guarantees C2 at the joints)."""
    breaks = [parts[0].breaks]
    for prev, nxt in itertools.pairwise(parts):
        if abs(prev.end - nxt.start) > 1e-9:
            raise ValueError("pieces must meet end-to-start in time")
        breaks.append(nxt.breaks[1:])
    return PiecewisePolynomial(np.concatenate(breaks), np.concatenate([p.coeffs for p in parts]))


def single(t0: float, duration: float, coeffs: np.ndarray) -> PiecewisePolynomial:
    """One segment [t0, t0 + duration] as a PiecewisePolynomial."""
    return PiecewisePolynomial(np.array([t0, t0 + duration]), coeffs[None])


def spline_through(times: np.ndarray, points: np.ndarray) -> PiecewisePolynomial:
    """C2 cubic spline through `points` [N, J] at strictly increasing `times` [N], N >= 2.

    "Not-a-knot" at the start (no artificial curvature condition where the reference usually
    joins through a transition anyway) and natural at the end (zero acceleration where the chunk's
    data runs out, so the stop that follows starts cleanly). Solved directly for the knot
    accelerations (one small dense solve for all joints), which is several times cheaper than a
    general-purpose spline object and runs in the loop thread when a chunk is taken.
    """
    times = np.asarray(times, dtype=np.float64)
    y = np.asarray(points, dtype=np.float64)
    if y.ndim != 2 or times.shape != (y.shape[0],) or y.shape[0] < 2:
        raise ValueError("spline_through needs N >= 2 times and [N, J] points")
    n = y.shape[0]
    h = np.diff(times)
    if np.any(h <= 0.0) or not np.all(np.isfinite(h)):
        raise ValueError("spline_through needs strictly increasing finite times")
    slope = np.diff(y, axis=0) / h[:, None]  # [n-1, J]
    if n == 2:
        # a straight line is the only C2 interpolant with a natural end through two points
        m = np.zeros_like(y)
    else:
        # unknowns: second derivatives m_i at the knots
        a = np.zeros((n, n))
        rhs = np.zeros_like(y)
        a[0, 0], a[0, 1], a[0, 2] = -h[1], h[0] + h[1], -h[0]  # not-a-knot: jerk equal at x_1
        idx = np.arange(1, n - 1)
        a[idx, idx - 1] = h[:-1]
        a[idx, idx] = 2.0 * (h[:-1] + h[1:])
        a[idx, idx + 1] = h[1:]
        rhs[1:-1] = 6.0 * (slope[1:] - slope[:-1])
        a[n - 1, n - 1] = 1.0  # natural end
        m = np.linalg.solve(a, rhs)
    coeffs = np.zeros((n - 1, _DEG, y.shape[1]))
    hh = h[:, None]
    coeffs[:, 0] = y[:-1]
    coeffs[:, 1] = slope - hh * (2.0 * m[:-1] + m[1:]) / 6.0
    coeffs[:, 2] = 0.5 * m[:-1]
    coeffs[:, 3] = (m[1:] - m[:-1]) / (6.0 * hh)
    return PiecewisePolynomial(times, coeffs)
