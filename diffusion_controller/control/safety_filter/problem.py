"""The CBF and the MPC problems: their QP layout, objective matrices and OSQP settings.

Both problems are built behind one interface (_build, then _solve/_bounds_mpc at each tick):
the same first-step safety rows, the MPC adding a horizon of joint-limit rows and soft
terminal barrier rows."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from diffusion_controller.control.qp import FixedPatternQP


def mpc_blocks(horizon: int, inputs: int) -> np.ndarray:
    """Ticks per MPC acceleration block: the first tick alone (it is the command), the other
    horizon - 1 ticks split as evenly as they go, the longer blocks last (the far future needs
    the least resolution)."""
    rest = inputs - 1
    base, extra = divmod(horizon - 1, rest)
    return np.array([1] + [base + (i >= rest - extra) for i in range(rest)], dtype=np.int64)



# Soft terminal rows in the MPC (a planning aid): the bench's busiest tick needs 6 (p99: 4)
_TERMINAL_SLOTS = 8


class _Problems:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def _osqp_settings(self) -> dict[str, float | int | bool]:
        cfg = self.config
        return {
            "eps_abs": cfg.eps_abs,
            "eps_rel": cfg.eps_rel,
            "max_iter": cfg.max_iter,
            "time_limit": cfg.time_limit if cfg.time_limit > 0 else 1e10,
            "polishing": False,
            "warm_starting": True,
            # convergence checked every 3 iterations: warm-started solves mostly need 6-9, so
            # checking every 5 ran 10 (solve p50 0.074 vs 0.083 ms in MPC, 0.048 vs 0.052 CBF)
            "check_termination": 3,
            "adaptive_rho": True,
            # OSQP redoes its Ruiz equilibration at every matrix update (every tick with a
            # barrier row); 3 passes cost half of what 10 do and converge as fast (MPC: mean
            # iterations 15.7 vs 19.3, p50 solve 0.12 vs 0.18 ms)
            "scaling": 3,
        }

    # ------------------------------------------------------------------ QP layout
    def _build(self) -> None:
        """Lay out the QP once: variables, rows, the fixed pattern of A and the constant P.

        Barrier rows enter the QP through `barrier_slots` fixed rows: each tick the
        non-redundant barrier rows (those some admissible u could violate) fill them, most
        critical first; unused slots are switched off. Every barrier row is still checked
        after the solve, so a row that did not get a slot cannot be violated (see _repair).
        """
        self._slots = self.config.barrier_slots
        self._alloc_rows(self._barriers.count)
        self._slots_used = 0
        if self.config.safety_mode == "cbf":
            self._build_cbf()
        else:
            self._build_mpc()

    def _build_cbf(self) -> None:
        n, k = self.n, self._slots
        # variables: u (n), s (n) with s >= |u|
        # rows: box u (n) | s - u >= 0 (n) | s + u >= 0 (n) | barrier slots (k) over (u, s)
        eye = np.arange(n)
        rows = [eye, n + eye, n + eye, 2 * n + eye, 2 * n + eye,
                3 * n + np.repeat(np.arange(k), 2 * n)]
        cols = [eye, n + eye, eye, n + eye, eye, np.tile(np.arange(2 * n), k)]
        self._m = 3 * n + k
        self._vals = np.concatenate([np.ones(n), np.ones(n), -np.ones(n), np.ones(n),
                                     np.ones(n), np.zeros(k * 2 * n)])
        self._slot_vals = self._vals[5 * n:].reshape(k, 2 * n)  # view
        self._slot_row0 = 3 * n
        w, rho = self._weights, self.config.jerk_weight
        # Half of the u curvature moves onto s: at the optimum s = |u| (every row prefers a
        # small s), so the cost is unchanged, and the QP becomes strongly convex in s too,
        # which ADMM needs to converge in few iterations.
        p_diag = np.concatenate([w + rho, w + rho])
        self._qp = FixedPatternQP(
            sp.diags(p_diag, format="csc"), np.concatenate(rows), np.concatenate(cols),
            self._m, self._osqp_settings(),
        )
        self._lo = np.full(self._m, -np.inf)
        self._up = np.full(self._m, np.inf)
        self._lo[n:3 * n] = 0.0
        self._qvec = np.zeros(2 * n)
        self._u_index = np.arange(n)

    def _build_mpc(self) -> None:
        cfg = self.config
        n, N, k, dt = self.n, cfg.mpc_horizon, self._slots, self.dt
        self._N = N
        # move blocking: M accelerations per joint over the N ticks, the first tick's (the
        # command) alone, the rest held over blocks (see mpc_blocks)
        blocks = mpc_blocks(N, cfg.mpc_inputs)
        M = len(blocks)
        self._M = M
        expand = np.zeros((N, M))  # tick k's acceleration from the block variables
        expand[np.arange(N), np.repeat(np.arange(M), blocks)] = 1.0
        checks = np.cumsum(blocks)[1:]  # ticks where the horizon rows check v and q: block ends
        R = len(checks)
        nu = n * M  # u, joint-major: index i * M + block
        s0, d0, sig = nu, nu + n, nu + 2 * n
        nvar = nu + 2 * n + 1
        u0 = np.arange(n) * M
        # condensed dynamics per joint: q_k - q0 - k dt v0 = dt^2 sum_{j<k} (k-j-1/2) u_j
        kk = np.arange(1, N + 1)[:, None]
        jj = np.arange(N)[None, :]
        phi_q = np.where(jj < kk, dt * dt * (kk - jj - 0.5), 0.0) @ expand  # [N, M]
        phi_v = np.where(jj < kk, dt, 0.0) @ expand
        diff = (np.eye(N) - np.eye(N, k=-1)) @ expand  # u_k - u_{k-1}; the first uses a_prev
        block = (cfg.mpc_position_weight * phi_q.T @ phi_q
                 + cfg.mpc_velocity_weight * phi_v.T @ phi_v
                 + cfg.mpc_acceleration_weight * expand.T @ expand
                 + cfg.jerk_weight * diff.T @ diff)
        self._phi_q, self._phi_v, self._mpc_diff = phi_q, phi_v, diff
        self._mpc_expand = expand
        self._mpc_block = block
        self._mpc_rho = math.nan  # the linear-cost matrices follow the live jerk_weight
        self._mpc_z = np.empty((5 + N, n))
        blocks_p = [2.0 * self._weights[i] * block for i in range(n)]
        # as in CBF mode, move half of u_0's own curvature onto s (s = |u_0| at the optimum)
        eps_s = np.array([0.5 * b[0, 0] for b in blocks_p])
        for i, b in enumerate(blocks_p):
            b[0, 0] -= eps_s[i]
        extra = np.concatenate([eps_s, np.full(n, 1e-8), [2.0]])
        P = sp.block_diag([*blocks_p, sp.diags(extra)], format="csc")
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        r = 0

        def add(rr: object, cc: object, vv: object) -> None:
            rows.append(np.asarray(rr, dtype=np.int64).reshape(-1))
            cols.append(np.asarray(cc, dtype=np.int64).reshape(-1))
            vals.append(np.asarray(vv, dtype=np.float64).reshape(-1))

        def add_row(row: int, joint: int, coef: np.ndarray) -> None:
            nz = np.flatnonzero(coef)
            add(np.full(len(nz), row), joint * M + nz, coef[nz])

        # 1. u boxes: first step gets the merged joint box, later blocks the acceleration limit
        add(np.arange(nu), np.arange(nu), np.ones(nu))
        r = nu
        # 2. split rows s - u_0 >= 0, s + u_0 >= 0
        sv = s0 + np.arange(n)
        add(r + np.arange(n), sv, np.ones(n))
        add(r + np.arange(n), u0, -np.ones(n))
        add(r + n + np.arange(n), sv, np.ones(n))
        add(r + n + np.arange(n), u0, np.ones(n))
        r += 2 * n
        # 3. first-step barrier slots over (u_0, s)
        self._slot_row0 = r
        slot_start = sum(len(v) for v in vals)
        add(r + np.repeat(np.arange(k), 2 * n), np.tile(np.concatenate([u0, sv]), k),
            np.zeros(k * 2 * n))
        r += k
        # 4. velocity rows and 5. position rows at the block ends after the first, per joint
        #    (velocity is linear within a block, so its ends bound it); 6. jerk rows between
        #    consecutive blocks only where they can bind: when jerk dt >= 2 amax for every joint
        #    (the Panda at 100 Hz), any two accelerations inside the u boxes satisfy them
        m1 = n * R
        self._jerk_rows = not self._jerk_free
        self._vel_row0, self._pos_row0, self._jerk_row0 = r, r + m1, r + 2 * m1
        jerk_m = n * (M - 1)
        for i in range(n):
            for c, step in enumerate(checks):
                add_row(r + i * R + c, i, phi_v[step - 1])
                add_row(r + m1 + i * R + c, i, phi_q[step - 1])
            if self._jerk_rows:
                for b in range(1, M):
                    row = r + 2 * m1 + i * (M - 1) + b - 1
                    add([row] * 2, [i * M + b, i * M + b - 1], [1.0, -1.0])
        r += 2 * m1 + (jerk_m if self._jerk_rows else 0)
        # 7. Delta_i = q_N - q0 - N dt v0 as an equality, so terminal rows stay sparse
        self._delta_row0 = r
        for i in range(n):
            nz = np.flatnonzero(phi_q[N - 1])
            add([r + i] * (len(nz) + 1), np.concatenate([[d0 + i], i * M + nz]),
                np.concatenate([[1.0], -phi_q[N - 1, nz]]))
        r += n
        # 8. soft terminal barrier slots: G . Delta + sigma >= margin - h - G . N dt v0
        kt = self._term_slots = min(k, _TERMINAL_SLOTS)
        self._term_row0 = r
        term_start = sum(len(v) for v in vals)
        add(r + np.repeat(np.arange(kt), n + 1),
            np.tile(np.concatenate([d0 + np.arange(n), [sig]]), kt), np.zeros(kt * (n + 1)))
        r += kt
        # 9. sigma >= 0
        add([r], [sig], [1.0])
        r += 1
        self._m = r
        self._vals = np.concatenate(vals)
        self._slot_vals = self._vals[slot_start:slot_start + k * 2 * n].reshape(k, 2 * n)
        self._term_vals = self._vals[term_start:term_start + kt * (n + 1)].reshape(kt, n + 1)
        self._term_vals[:, n] = 1.0
        self._term_used = 0
        self._qp = FixedPatternQP(P, np.concatenate(rows), np.concatenate(cols), r,
                                  self._osqp_settings())
        self._lo = np.full(r, -np.inf)
        self._up = np.full(r, np.inf)
        self._lo[nu:nu + 2 * n] = 0.0
        self._lo[self._delta_row0:self._delta_row0 + n] = 0.0
        self._up[self._delta_row0:self._delta_row0 + n] = 0.0
        self._lo[r - 1] = 0.0
        self._qvec = np.zeros(nvar)
        self._qvec[sig] = 1e3  # linear price of violating the soft terminal rows
        self._u_index = u0
        # bounds that never change (the first step's box is written every tick)
        amax = self._limits.acceleration
        self._lo[:nu] = np.repeat(-amax, M)
        self._up[:nu] = np.repeat(amax, M)
        self._mpc_relaxed = None  # jerk rows: set by the first tick
        self._mpc_vel_drop = (checks - 1)[None, :] * amax[:, None] * dt  # braking from step 1
        self._mpc_horizon_dt = N * dt
        self._mpc_dmax = amax * phi_q[N - 1].sum()  # the largest |Delta_i| the u boxes allow
        self._mpc_w2 = np.concatenate([np.zeros(n), -self._mpc_dmax])
        self._vel_col = self._limits.velocity[:, None]
        # [velocity; position] rows at the checked ticks: bound - x (see _bounds_mpc)
        self._mpc_lo_b = np.empty((2, n, R))
        self._mpc_up_b = np.empty((2, n, R))
        self._mpc_lo_b[1] = self._limits.lower[:, None]
        self._mpc_up_b[1] = self._limits.upper[:, None]
        self._mpc_x = np.empty((2, n, R))
        self._mpc_x_dt = np.stack([np.ones(R), checks * dt])[:, None, :]  # x = q_sel + v * this
        v0 = self._vel_row0
        if self._pos_row0 != v0 + m1:
            raise RuntimeError("internal: velocity and position rows are not adjacent")
        self._mpc_vplo = self._lo[v0:v0 + 2 * m1].reshape(2, n, R)
        self._mpc_vpup = self._up[v0:v0 + 2 * m1].reshape(2, n, R)
        self._mpc_qvec = self._qvec[:nu].reshape(n, M)
        self._w_all_one = bool(np.all(self._weights == 1.0))

    def _mpc_objective_matrices(self, rho: float) -> None:
        """The MPC's linear cost is linear in Z = [q; v; a; v_ref s; a_ref s; references]
        (rows of [5 + N, J], or [6, J] when only q_ref is known): lin = C @ Z, and the first
        step of the unconstrained optimum is -f @ Z. C and f are built once (again when the
        live jerk_weight changes), so a tick spends two products on the objective."""
        cfg, dt, N, M = self.config, self.dt, self._N, self._M
        wq, wv = cfg.mpc_position_weight, cfg.mpc_velocity_weight
        pq, pv = self._phi_q, self._phi_v  # [N, M]
        ones = np.ones(N)
        e0 = np.zeros(N)  # the first tick
        e0[0] = 1.0
        u0 = np.zeros(M)  # its acceleration, the first block
        u0[0] = 1.0
        kk = dt * np.arange(1, N + 1)  # the current motion's prediction q + k dt v
        kk0 = dt * np.arange(N)  # extrapolated references qr + k dt v_ref
        alpha = wq * pq.T @ ones
        beta = wq * pq.T @ kk + wv * pv.T @ ones
        delta = -rho * self._mpc_diff.T @ e0  # previous acceleration, through the jerk cost
        a_col = -cfg.mpc_acceleration_weight * u0
        diff = np.zeros((N, N))  # velocity references from consecutive future references
        idx = np.arange(1, N)
        diff[idx, idx] = 1.0 / dt
        diff[idx, idx - 1] = -1.0 / dt
        c_fut = np.column_stack([alpha, beta, delta, -wv * pv.T @ e0, a_col,
                                 -(wq * pq.T + wv * pv.T @ diff)])
        c_hold = np.column_stack([alpha, beta, delta, -(wq * pq.T @ kk0 + wv * pv.T @ ones),
                                  a_col, -wq * pq.T @ ones])
        first = np.linalg.inv(self._mpc_block)[0]  # row of the per-joint inverse (same block)
        self._mpc_c_fut, self._mpc_c_hold = 2.0 * c_fut.T, 2.0 * c_hold.T  # -> [.., M]
        self._mpc_f_fut, self._mpc_f_hold = c_fut.T @ first, c_hold.T @ first
        self._mpc_rho = rho
