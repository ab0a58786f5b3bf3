"""Tracking: the objectives that follow the reference, and the slow-down near a singularity."""

from __future__ import annotations

import numpy as np


class _Tracking:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def _speed_scale(self, q: np.ndarray, w: float, v_goal: np.ndarray) -> float:
        """Velocity scale in [0, 1] near a singularity, applied only when the intended motion
        lowers manipulability (a look-ahead, as MoveIt Servo does): linear from 1 at the
        slow-down threshold to 0 at the stop threshold."""
        slow, stop = self.config.singularity
        if w >= slow:
            return 1.0
        look = q + 0.05 * v_goal
        if not np.all(np.isfinite(look)):
            return 0.0
        w_ahead = self._kin.manipulability_at(look)
        if w_ahead >= w:
            return 1.0
        return float(np.clip((w - stop) / (slow - stop), 0.0, 1.0))

    def _objective_cbf(self, u_des: np.ndarray, a: np.ndarray) -> np.ndarray:
        n, rho = self.n, self.config.jerk_weight
        lin = self._weights * u_des
        lin += rho * a
        np.multiply(lin, -2.0, out=self._qvec[:n])
        lin /= self._weights + rho
        return lin

    def _objective_mpc(self, q, v, a, qr, vr, ar, fut, scale) -> np.ndarray:
        """Linear cost of tracking over the horizon (into qvec) and the first step of the
        unconstrained optimum: the references are the future ones when given (the first
        replaced by q_ref, the last held), else q_ref extrapolated with v_ref."""
        rho = self.config.jerk_weight
        if rho != self._mpc_rho:
            self._mpc_objective_matrices(rho)
        N = self._N
        z = self._mpc_z
        z[0] = q
        z[1] = v
        z[2] = a
        if vr is None:
            z[3] = 0.0
        else:
            np.multiply(vr, scale, out=z[3])
        if ar is None:
            z[4] = 0.0
        else:
            np.multiply(ar, scale, out=z[4])
        z[5] = qr
        if fut is not None:
            m = min(N, fut.shape[0])
            z[6:5 + m] = fut[1:m]
            z[5 + m:] = fut[m - 1]
            c, f = self._mpc_c_fut, self._mpc_f_fut
        else:
            z = z[:6]
            c, f = self._mpc_c_hold, self._mpc_f_hold
        qvec = np.dot(z.T, c, out=self._mpc_qvec)  # [J, N], joint-major like u
        if not self._w_all_one:
            qvec *= self._weights[:, None]
        u_free = np.dot(z.T, f)
        return np.negative(u_free, out=u_free)
