"""Braking and commit: the always-safe fallback, and the last check before a command leaves."""

from __future__ import annotations

import math

import numpy as np

from diffusion_controller.control.braking import brake_acceleration
from diffusion_controller.control.safety_filter._shared import _sum
from diffusion_controller.control.types import FilterResult


class _BrakeCommit:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def brake(self, reason: str = "brake requested") -> FilterResult:
        """The safest provable command: every joint decelerates at its limit towards zero
        velocity, which stays within the position, velocity and acceleration limits by
        construction (and within jerk whenever jerk * dt covers the change, as it does for the
        Panda at 100 Hz). `status` is "holding" once stopped."""
        with self._lock:
            if self._q is None:
                raise RuntimeError("SafetyFilter.brake before reset(q)")
            return self._brake(reason)

    def _brake(self, reason: str, res=None) -> FilterResult:
        lim = self._limits
        u = brake_acceleration(self._v, lim.acceleration, self.dt)
        stopped = bool(np.all(self._v == 0.0))
        status = "holding" if stopped else "braking"
        return self._commit(
            u, status, reason, True,
            res.iterations if res is not None else 0,
            res.solve_ms if res is not None else 0.0,
            0, {},
        )

    def _commit(
        self,
        u: np.ndarray,
        status: str,
        reason: str,
        intervened: bool,
        iterations: int,
        solve_ms: float,
        active: int,
        details: dict[str, float],
    ) -> FilterResult:
        """Last line of defence: clamp u to the acceleration limit and to what keeps velocity and
        position inside the limits, integrate, and store the new commanded state."""
        lim, dt = self._limits, self.dt
        q, v = self._q, self._v
        assert q is not None
        n = self.n
        amax = self._amax
        v_new = u * dt
        v_new += v
        q_new = v + v_new  # q + v dt + u dt^2 / 2 = q + (v + v+) dt / 2
        q_new *= 0.5 * dt
        q_new += q
        chk = self._chk4
        np.abs(v_new, out=chk[:n])
        np.abs(u, out=chk[n:2 * n])
        chk[2 * n:3 * n] = q_new
        np.negative(q_new, out=chk[3 * n:])
        chk -= self._lim4
        if not chk.max() <= 0.0:  # (also for NaN) normally u is inside already: then the
            # clamps below would change nothing
            if not math.isfinite(_sum(u)):
                u = brake_acceleration(v, amax, dt)
            vel_lo = np.minimum((-lim.velocity - v) / dt, 0.0)
            vel_hi = np.maximum((lim.velocity - v) / dt, 0.0)
            u = np.minimum(np.maximum(u, np.maximum(vel_lo, -amax)), np.minimum(vel_hi, amax))
            q_new = q + v * dt + 0.5 * u * dt * dt
            over = (q_new > lim.upper) | (q_new < lim.lower)
            if over.any():  # only reachable through rounding: land exactly on the limit
                target = np.clip(q_new, lim.lower, lim.upper)
                u_fix = 2.0 * (target - q - v * dt) / (dt * dt)
                u = np.where(over, np.clip(u_fix, -amax, amax), u)
                q_new = np.where(over, target, q + v * dt + 0.5 * u * dt * dt)
            v_new = v + u * dt
        u = u.copy()
        self._q, self._v, self._a = q_new, v_new, u
        return FilterResult(
            positions=q_new.copy(),
            velocities=v_new.copy(),
            accelerations=u.copy(),
            status=status,
            intervened=intervened,
            reason=reason,
            iterations=iterations,
            solve_ms=solve_ms,
            active_constraints=active,
            details=details,
        )
