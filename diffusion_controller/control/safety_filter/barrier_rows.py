"""Barrier rows: table, workspace, keep-out spheres and self-collision pairs as rows linear
in [u; |u|], screened and selected into the QP's fixed number of slots."""

from __future__ import annotations

import numpy as np

from diffusion_controller.control.safety_filter._shared import _EMPTY


class _BarrierRows:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def _barrier_rows(self, v: np.ndarray) -> int:
        """Build every barrier row that some admissible u could bring near its bound:

            coef_u . u + coef_s . |u| >= rhs   (scaled by 2/dt^2: accelerations)

        into self._rs ([coef_u; coef_s], joint-major [2J, count]), self._rhs, self._strict (rhs
        plus the reserve for the next tick's estimate) and self._bval; returns count.

        B(x) = h - margin - sum_i w_i v_i^2/(2b_i) - sum_i |G_i| b_i dt^2/8 - E is the clearance
        left after braking from x; w_i = |G_i| counts joints that may move towards the barrier
        (all joints whose velocity can change sign within the tick, else those whose velocity
        points towards it). Requiring B_lin(x+) >= (1 - gamma) B(x), with v+^2 bounded by the
        linear v^2 + 2 v u dt + b s dt^2 (s >= |u|), gives the row.
        """
        cfg, dt, n = self.config, self.dt, self.n
        kin, bars = self._kin, self._barriers
        gamma = cfg.barrier_gamma
        if gamma != self._gamma_seen:
            self._set_gamma(gamma)
        if (cfg.sphere_margin, cfg.tool_clearance, cfg.grasp_margin) != self._margins_seen:
            self._refresh_margins()  # a live change of the margins (or a new row layout)
        margin = self._row_margin_s  # per row (sphere_margin, tool_clearance, grasp_margin)
        m2 = self._m2
        av = np.abs(v)
        # joint excursion bound over this tick and the stop after it (see braking.py), and the
        # same after a tick of full acceleration: how much the next tick's estimate can grow,
        # which the rows keep in reserve so that the next tick is certified too.
        # dd = x dt + 0.625 b dt^2 + (x + b dt)^2 / (2b) for x = |v| and |v| + b dt, written
        # with z = x + b dt as z (dt + z / (2b)) - 0.375 b dt^2
        dd = self._dd
        z = np.add(av, self._dd_shift)
        np.multiply(z, self._inv2b, out=dd)
        dd += dt
        dd *= z
        dd += self._dd_const
        np.multiply(dd[:, :, None], dd[:, None, :], out=self._sph_outer)
        # reach of the stop per unit gradient: v^2/(2b), or for a joint that stops within the
        # tick |v| dt - v^2/(2b) (>= v^2/(2b)), the value the row's bound gives braking; with it
        # braking always satisfies the row whenever B(x) >= 0
        turning = av <= self._bdt  # the velocity can change sign within the tick
        reach = m2[0, 2 * n:]
        np.multiply(v, v, out=reach)
        reach *= self._inv2b
        np.copyto(reach, av * dt - reach, where=turning)
        np.multiply(reach, self._c_gamma, out=m2[1, 2 * n:])
        np.multiply(v, -2.0 / dt, out=m2[1, :n])
        # Rows no admissible u can bring near their bound are left out (exactly: with |G_i|
        # bounded by the norms of the point Jacobians' columns at this q, the row holds over
        # the whole acceleration box).
        pj = self._pj
        np.multiply(av, 2.0 * dt / gamma, out=pj)
        pj += reach
        pj += self._pj_const
        sq, norm = self._jp_sq, self._jp_norm
        np.multiply(kin.jp, kin.jp, out=sq)
        np.matmul(self._ones3, sq, out=norm)
        np.sqrt(norm, out=norm)
        y = np.matmul(self._sph_x, self._sph_k.T, out=self._sph_y)  # [reach, e0, e1]
        t = np.dot(self._t_comb, y)
        h_all = bars.distances(kin.pos)
        self._h_all = h_all
        ta, tb = self._rb_ta, self._rb_tb
        t.take(bars.row_sphere, out=ta, mode="clip")
        t.take(bars.row_other, out=tb, mode="clip")
        ta += tb
        np.subtract(h_all, ta, out=ta)
        cand = np.less(ta, margin, out=self._rb_mask).nonzero()[0]
        if not self._screen:  # (tests: build every row, to check what the screen leaves out)
            cand = np.arange(len(h_all))
        self._cand = cand
        count = len(cand)
        if not count:
            self._bval = self._rhs = self._strict = _EMPTY
            self._rs = self._rs_empty
            return 0
        ra = bars.row_sphere.take(cand)
        rb = bars.row_other.take(cand)
        e = y[1:].take(ra, axis=1)
        e += y[1:].take(rb, axis=1)
        # joint-major [g; |g|; w] [3, J, R]: per-joint factors broadcast along whole rows
        gaw = np.empty((3, n, count))
        bars.gradients(cand, kin.jp, ra, rb, out=gaw[0].T[:, None, :])
        g, ag, wgt = gaw[0], gaw[1], gaw[2]
        self._gaw = gaw  # [g; |g|; w] of this tick's candidates (MPC terminal rows read it)
        np.abs(g, out=ag)
        np.multiply(g, np.sign(-v)[:, None], out=wgt)
        np.maximum(wgt, 0.0, out=wgt)
        np.copyto(wgt, ag, where=turning[:, None])
        # m2 @ [g; |g|; w]: row 0 is w . reach + |G| . b dt^2/8, row 1 the rest of rhs
        y2 = np.dot(m2, gaw.reshape(3 * n, count))
        base = h_all.take(cand)
        base -= margin.take(cand)
        base -= e[0]
        self._bval = base - y2[0]
        base *= self._c_gamma
        self._rhs = rhs = np.subtract(y2[1], base, out=base)
        # growth of the error bound by the next tick, kept in reserve by the strict rows
        growth = np.subtract(e[1], e[0], out=e[1])
        growth *= 2.0 / (dt * dt)
        self._strict = rhs + growth
        # the rows, joint-major: [coef_u; coef_s] [2J, R]
        self._rs = rs = np.empty((2 * n, count))
        np.multiply(wgt, np.multiply(v, self._c_u)[:, None], out=rs[:n])
        np.subtract(g, rs[:n], out=rs[:n])
        np.negative(wgt, out=rs[n:])
        return count

    def _corners(self, count: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per barrier row, its minimum and its maximum over the box [lo, hi]: a row is concave
        in each u_i, so per joint the minimum is at lo_i or hi_i, and the maximum there or at 0
        when the box contains 0."""
        if not count:
            return _EMPTY, _EMPTY
        n = self.n
        lh = self._lh
        lh[0, :n, 0] = lo
        lh[1, :n, 0] = hi
        np.abs(lh[:, :n], out=lh[:, n:])
        p = self._rs * lh  # [corner, 2J, R]
        f = np.add(p[:, :n], p[:, n:], out=p[:, :n])  # [corner, J, R]
        each = np.minimum(f[0], f[1])
        worst = np.dot(self._ones_n, each)
        np.maximum(f[0], f[1], out=each)
        if not (max(lo.tolist()) <= 0.0 <= min(hi.tolist())):
            floor = np.where((lo <= 0.0) & (hi >= 0.0), 0.0, -np.inf)
            np.maximum(each, floor[:, None], out=each)
        return worst, np.dot(self._ones_n, each)

    def _recover_rows(self) -> str:
        """Turn the rows whose barrier B is negative into 'B must not decrease' rows.

        A row asks B(x+) >= (1 - gamma) B(x): from inside the margin (B < 0) that is a rise of
        gamma |B| in one tick, which no admissible acceleration gives from rest, so every tick
        was infeasible and the arm held forever. Dropping the gamma term for those rows keeps
        them from getting worse while any motion that raises B (out of the margin) passes;
        rows with B >= 0 keep their full condition. Returns the note naming the barrier."""
        bval = self._bval
        inside = bval < 0.0
        # (less a nanometre, so that rounding cannot make standing still fail the row)
        lift = self._c_gamma * np.where(inside, bval - 1e-9, 0.0)
        self._rhs = self._rhs + lift
        self._strict = self._strict + lift
        r = int(np.argmin(bval))
        label = self._barriers.row_label(int(self._cand[r]))
        return f"recovering: inside the margin of {label} (B={bval[r]:.4f} m)"

    def _lost_certificate(self) -> str:
        """Why a tick can be infeasible: the stop from here is no longer certified clear of a
        barrier (an obstacle moved in, or the estimate grew at speed). Braking is still safe: the
        previous tick certified the stop from this very state."""
        bval = self._bval
        if not len(bval) or float(np.min(bval)) >= 0.0:
            return ""
        r = int(np.argmin(bval))
        label = self._barriers.row_label(int(self._cand[r]))
        return f": stop not certified clear of {label} (B={bval[r]:.4f} m)"

    def _select(
        self, rhs: np.ndarray, worst: np.ndarray, lo: np.ndarray, hi: np.ndarray,
        u_free: np.ndarray,
    ) -> np.ndarray:
        """Indices (into the built rows) of the barrier rows that get a QP slot: rows that some
        u in the box could violate (their minimum over the box is below the bound), those
        closest to violation at the unconstrained optimum first."""
        sel = (worst < rhs).nonzero()[0]
        if len(sel) > self._slots:
            n = self.n
            uu = self._uu
            np.minimum(np.maximum(u_free, lo), hi, out=uu[:n])
            np.abs(uu[:n], out=uu[n:])
            at_guess = np.dot(uu, self._rs.take(sel, axis=1)) - rhs[sel]
            sel = sel[np.argpartition(at_guess, self._slots)[:self._slots]]
        return sel
