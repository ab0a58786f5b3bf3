"""The joint box: per-joint acceleration bounds from position, velocity, acceleration and
jerk limits, exact for the braking profile (control/braking.py)."""

from __future__ import annotations

import numpy as np


def _intersect(
    lo: np.ndarray, hi: np.ndarray, lo2: np.ndarray, hi2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersect per-joint intervals where that leaves something; elsewhere keep the end of
    [lo, hi] nearest to [lo2, hi2] (the earlier constraint has priority)."""
    nlo = np.maximum(lo, lo2)
    nhi = np.minimum(hi, hi2)
    ok = nlo <= nhi
    near = np.where(hi2 < lo, lo, hi)  # [lo2, hi2] entirely below: stick to lo, else to hi
    out_lo = np.where(ok, nlo, near)
    out_hi = np.where(ok, nhi, near)
    return out_lo, out_hi, ok



class _JointBox:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def _joint_box(
        self, q: np.ndarray, v: np.ndarray, a: np.ndarray, vmax: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-joint bounds on this tick's acceleration: (physical box: acceleration, position
        viability, velocity) and that box with jerk. Where they conflict (only from a state the
        filter did not command itself), the earlier ones win: acceleration, then position, then
        velocity, and jerk yields to all of them.

        Worked on the doubled vector [upper side of u; upper side of -u], so each limit is one
        call for both sides."""
        n, dt = self.n, self.dt
        q2, v2, box = self._q2, self._v2, self._box2
        q2[:n] = q
        np.negative(q, out=q2[n:])
        v2[:n] = v
        np.negative(v, out=v2[n:])
        # position viability (a stop inside the limits), unless every joint is far inside
        pos2 = self._b2 if (self._far2 - q2).min() >= 0.0 else self._viable(q2, v2)
        vmax2 = self._vel2 if vmax is self._vel else np.concatenate((vmax, vmax))
        np.subtract(vmax2, v2, out=box)
        np.multiply(box, 1.0 / dt, out=box)  # velocity
        np.minimum(box, pos2, out=box)
        np.minimum(box, self._b2, out=box)  # acceleration
        if not (box[:n] + box[n:]).min() >= 0.0:  # some joint's interval is empty
            amax = self._amax
            p_lo, p_hi = -pos2[n:], pos2[:n].copy()
            vel_lo, vel_hi = (-vmax - v) / dt, (vmax - v) / dt
            phys_lo, phys_hi, _ = _intersect(-amax, amax, p_lo, p_hi)
            phys_lo, phys_hi, _ = _intersect(phys_lo, phys_hi, vel_lo, vel_hi)
        else:
            phys_lo, phys_hi = -box[n:], box[:n].copy()
        if self._jerk_free:  # |u - a| <= 2 amax <= jerk dt: the jerk rows cannot bind
            return phys_lo, phys_hi, phys_lo, phys_hi
        jd = self._jerk_dt2[:n]
        lo = np.maximum(phys_lo, a - jd)
        hi = np.minimum(phys_hi, a + jd)
        ok = lo <= hi
        if ok.all():
            return phys_lo, phys_hi, lo, hi
        return phys_lo, phys_hi, np.where(ok, lo, phys_lo), np.where(ok, hi, phys_hi)
