"""Solving a tick: the joint box and barrier rows into the QP, OSQP with warm start, and the
repair of a solution that misses a row by the solver's tolerance."""

from __future__ import annotations

import math
import time

import numpy as np

from diffusion_controller.control.braking import brake_acceleration
from diffusion_controller.control.qp import INFEASIBLE, SOLVED, SOLVED_INACCURATE
from diffusion_controller.control.safety_filter._shared import (
    _EMPTY_INDEX,
    _sum,
)
from diffusion_controller.control.types import FilterResult


def _repair(
    u: np.ndarray,
    v: np.ndarray,
    amax: np.ndarray,
    dt: float,
    rows_u: np.ndarray,
    rows_s: np.ndarray,
    rhs: np.ndarray,
) -> tuple[np.ndarray | None, float]:
    """Smallest blend (1 - lam) u + lam brake_u that satisfies every barrier row, or None when
    even braking does not (rows are concave in u, so the blend's value is at least the blend of
    the values)."""
    if len(rhs) == 0:
        return u, 0.0
    f_u = rows_u @ u + rows_s @ np.abs(u)
    short = rhs - f_u
    if np.max(short) <= 0.0:
        return u, 0.0
    brake_u = brake_acceleration(v, amax, dt)
    f_b = rows_u @ brake_u + rows_s @ np.abs(brake_u)
    bad = short > 0.0
    gain = f_b[bad] - f_u[bad]
    if np.any(f_b[bad] < rhs[bad]) or np.any(gain <= 0.0):
        return None, 1.0
    lam = min(1.0, float(np.max(short[bad] / gain)) * (1.0 + 1e-9) + 1e-12)
    return (1.0 - lam) * u + lam * brake_u, lam


class _Solve:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def _tick(
        self,
        qr: np.ndarray,
        vr: np.ndarray | None,
        ar: np.ndarray | None,
        fut: np.ndarray | None,
        t0: float,
    ) -> FilterResult:
        cfg, dt = self.config, self.dt
        q, v, a = self._q, self._v, self._a
        assert q is not None
        kin = self._kin
        kin.update(q)
        if not math.isfinite(_sum(kin.pos, axis=None) + _sum(kin.jw, axis=None)):
            return self._brake("non-finite kinematics")
        w = kin.manipulability()
        # desired velocity towards the reference, limited so that a stop at half the
        # acceleration limit fits in the remaining error (no overshoot when saturated)
        err = qr - q
        err -= v * dt
        if ar is not None:
            err -= ar * (0.5 * dt * dt)
        abs_err = np.abs(err)
        fb = abs_err * (cfg.tracking_kp / cfg.tracking_kd)
        np.minimum(fb, np.sqrt(np.multiply(abs_err, self._amax, out=abs_err), out=abs_err),
                   out=fb)
        v_goal = np.copysign(fb, err, out=fb)
        if vr is not None:
            v_goal += vr
        scale = 1.0 if w >= cfg.singularity[0] else self._speed_scale(q, w, v_goal)
        self._last_scale = scale
        if scale == 1.0:
            vmax = self._vel
            np.minimum(v_goal, vmax, out=v_goal)
            np.maximum(v_goal, self._neg_vel, out=v_goal)
        else:
            vmax = self._vel * scale
            v_goal *= scale
            np.minimum(v_goal, vmax, out=v_goal)
            np.maximum(v_goal, -vmax, out=v_goal)
        # u_des = a_ref scale + kd (v_goal - v - a_ref dt)
        u_des = np.subtract(v_goal, v, out=v_goal)
        if ar is not None:
            u_des -= ar * dt
        u_des *= cfg.tracking_kd
        if ar is not None:
            u_des += ar * scale if scale != 1.0 else ar
        phys_lo, phys_hi, lo, hi = self._joint_box(q, v, a, vmax)
        count = self._barrier_rows(v)
        strict, rhs = self._strict, self._rhs
        # rhs sums every row's h, error bounds and |G| (ag @ b dt^2/8 with b > 0), and G, w and
        # coef_u are finite together: one sum catches a non-finite value anywhere in the rows
        if not math.isfinite(_sum(strict) + _sum(u_des)):
            return self._brake("non-finite barrier or reference terms")
        recovery = ""
        if count and self._bval.min() < 0.0:
            if self._recovering or not v.any():
                # inside a barrier's margin (started there, or came to rest there after a hold):
                # those rows ask only that their barrier not decrease, so moving out is
                # admitted under the same limits, and moving further in is not
                recovery = self._recover_rows()
                strict, rhs = self._strict, self._rhs
            else:
                # the stop from here is not certified by this tick's (more pessimistic)
                # estimate; the previous tick certified exactly this stop: brake
                return self._brake("infeasible" + self._lost_certificate())
        self._recovering = bool(recovery)
        if cfg.safety_mode == "cbf":
            u_free = self._objective_cbf(u_des, a)
        else:
            u_free = self._objective_mpc(q, v, a, qr, vr, ar, fut, scale)
        # the rows keep in reserve what the next tick's estimate may add (so the next tick is
        # certified too); that reserve, jerk and the MPC planning rows yield before braking does
        res = None
        worst, best = self._corners(count, lo, hi)
        if not (np.maximum(best, 0.0) < strict).any():  # every row reachable in the box
            res = self._solve(q, v, lo, hi, u_free, strict, worst, relax=False)
        if res is None or res.status_val not in (SOLVED, SOLVED_INACCURATE):
            worst, _ = self._corners(count, phys_lo, phys_hi)
            res = self._solve(q, v, phys_lo, phys_hi, u_free, rhs, worst, relax=True)
        if res.status_val in INFEASIBLE:
            return self._brake(f"infeasible: {res.status}{self._lost_certificate()}", res)
        if res.status_val not in (SOLVED, SOLVED_INACCURATE):
            return self._brake(f"solver failure: {res.status}", res)
        u = res.x[self._u_index]
        if not math.isfinite(_sum(u)):
            return self._brake("solver returned non-finite values", res)
        # check every barrier row (slotted or not); repair a shortfall by blending towards the
        # braking acceleration, which satisfies every row (the rows are concave in u)
        np.maximum(u, phys_lo, out=u)
        np.minimum(u, phys_hi, out=u)
        u, blend = self._repair(u, v, count)
        if u is None:
            return self._brake("no admissible acceleration satisfies the barrier rows", res)
        notes = []
        if blend > 0:
            notes.append(f"blended {blend:.3f} towards braking")
        if res.status_val == SOLVED_INACCURATE:
            notes.append("solved inaccurate")
        if scale < 1.0:
            notes.append(f"singularity slow-down x{scale:.2f}")
        if recovery:
            notes.insert(0, recovery)
        gap = np.subtract(u, u_free, out=u_free)
        intervened = bool(np.abs(gap, out=gap).max() > cfg.intervention_tolerance)
        ay = np.abs(res.y)
        if intervened:
            notes.append(self._binding_reason(ay))
        h_all = self._h_all
        details = {
            "manipulability": w,
            "speed_scale": scale,
            "min_clearance": float(h_all.min()) - cfg.sphere_margin if len(h_all) else math.inf,
            "barrier_rows_in_qp": float(self._n_selected),
            "blend": blend,
        }
        active = int(np.count_nonzero(ay > 1e-6))
        out = self._commit(u, "ok", "; ".join(notes), intervened, res.iterations, res.solve_ms,
                           active, details)
        details["tick_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    def _solve(self, q, v, lo, hi, u_free, rhs, worst, relax: bool):
        n = self.n
        sel = self._select(rhs, worst, lo, hi, u_free) if len(rhs) else _EMPTY_INDEX
        self._sel = sel
        used = len(sel)
        self._n_selected = used
        slot = self._slot_vals
        r0 = self._slot_row0
        if used:
            rs = self._rs.take(sel, axis=1)  # [2J, used]
            norm = np.abs(rs[:n]).max(axis=0)
            np.maximum(norm, 1e-9, out=norm)
            np.divide(rs, norm, out=slot[:used].T)
            np.divide(rhs.take(sel), norm, out=self._lo[r0:r0 + used])
        if self._slots_used > used:  # switch off what the last tick used and this one does not
            slot[used:self._slots_used] = 0.0
            self._lo[r0 + used:r0 + self._slots_used] = -np.inf
        if self.config.safety_mode == "cbf":
            self._lo[:n] = lo
            self._up[:n] = hi
            # A only changes through the slots: nothing in them now or last tick, no change
            changed = bool(used or self._slots_used)
        else:
            # A changes through the slots and the terminal rows: nothing in either, no change
            changed = self._bounds_mpc(q, v, lo, hi, relax) or bool(used or self._slots_used)
        self._slots_used = used
        assert self._qp is not None
        return self._qp.solve(self._qvec, self._vals, self._lo, self._up, a_changed=changed)

    def _bounds_mpc(self, q, v, lo, hi, relax: bool) -> bool:
        """The horizon's bounds for this tick, and its soft terminal rows; True when the
        terminal rows' coefficients changed (or must be switched off)."""
        cfg, lim, dt, n, M = self.config, self._limits, self.dt, self.n, self._M
        lo_all, up_all = self._lo, self._up
        lo_all[self._u_index] = lo  # the first step's box; later blocks keep +-amax
        up_all[self._u_index] = hi
        if relax is not self._mpc_relaxed and self._jerk_rows:
            m1 = n * (M - 1)
            j0 = self._jerk_row0
            jd = np.repeat(lim.jerk * dt, M - 1)
            lo_all[j0:j0 + m1] = -np.inf if relax else -jd
            up_all[j0:j0 + m1] = np.inf if relax else jd
            self._mpc_relaxed = relax
        # velocity at the checked ticks: within the (scaled) limit, but never asking for more
        # than braking can do from the first step; position: the increments from q + k dt v.
        # Both as bound - x on [velocity; position] x [J, checks], the rows' order in lo / up
        lo_b, up_b, x = self._mpc_lo_b, self._mpc_up_b, self._mpc_x
        cap = up_b[0]
        np.subtract(np.abs(v)[:, None], self._mpc_vel_drop, out=cap)
        np.maximum(cap, self._vel_col if self._last_scale == 1.0
                   else (lim.velocity * self._last_scale)[:, None], out=cap)
        np.negative(cap, out=lo_b[0])
        np.multiply(v[:, None], self._mpc_x_dt, out=x)
        x[1] += q[:, None]
        np.subtract(lo_b, x, out=self._mpc_vplo)
        np.subtract(up_b, x, out=self._mpc_vpup)
        # soft terminal rows (first-order, a planning aid): this tick's barrier candidates that
        # some admissible horizon could bring within the margin, the most critical first
        t0, before = self._term_row0, self._term_used
        used = 0
        if not relax and len(self._cand):
            g = self._gaw[0]  # [J, rows] gradients of the candidates' distances
            h = self._h_all.take(self._cand)
            # lowest first-order distance after the horizon: h + N dt v . G - |G| . Delta_max
            w2 = self._mpc_w2
            np.multiply(v, self._mpc_horizon_dt, out=w2[:n])
            low = np.dot(w2, self._gaw[:2].reshape(2 * n, -1))
            low += h
            sel = (low < cfg.sphere_margin).nonzero()[0]
            used = len(sel)
            if used:
                pred = np.dot(w2[:n], g.take(sel, axis=1))  # with the current motion alone
                pred += h.take(sel)
                kt = self._term_slots
                if used > kt:
                    keep = np.argpartition(pred, kt)[:kt]
                    sel, pred, used = sel.take(keep), pred.take(keep), kt
                gs = g.take(sel, axis=1)
                norm = np.abs(gs).max(axis=0)
                np.maximum(norm, 1e-9, out=norm)
                np.divide(gs, norm, out=self._term_vals[:used, :n].T)
                np.subtract(cfg.sphere_margin, pred, out=pred)
                np.divide(pred, norm, out=lo_all[t0:t0 + used])
        if before > used:
            self._term_vals[used:before, :n] = 0.0
            lo_all[t0 + used:t0 + before] = -np.inf
        self._term_used = used
        return bool(used or before)

    def _binding_reason(self, ay: np.ndarray) -> str:
        """Name what bound the solution, from the QP's multipliers (|y|)."""
        parts = []
        k = self._n_selected
        if k:
            duals = ay[self._slot_row0:self._slot_row0 + k].tolist()
            j = max(range(k), key=duals.__getitem__)
            if duals[j] > 1e-6:
                row = int(self._cand[self._sel[j]])
                parts.append(f"barrier {self._barriers.row_label(row)}")
        names = self.robot.joint_names
        at_box = [names[i] for i, d in enumerate(ay[self._u_index].tolist()) if d > 1e-6]
        if at_box:
            parts.append("joint limits on " + ", ".join(at_box))
        return "; ".join(parts) if parts else "cost trade-off"

    def _repair(
        self, u: np.ndarray, v: np.ndarray, count: int
    ) -> tuple[np.ndarray | None, float]:
        """Check u against every built barrier row; if some row is short, the smallest blend
        (1 - lam) u + lam brake_u that satisfies them all, or None when even braking does not
        (rows are concave in u, so the blend's value is at least the blend of the values)."""
        if not count:
            return u, 0.0
        n = self.n
        uu = self._uu
        uu[:n] = u
        np.abs(u, out=uu[n:])
        rs = self._rs
        short = np.subtract(self._rhs, np.dot(uu, rs))
        if short.max() <= 0.0:
            return u, 0.0
        return _repair(u, v, self._amax, self.dt, rs[:n].T, rs[n:].T, self._rhs)
