"""The tick's constants and preallocated buffers.

Limits and dt are fixed for a filter's life, so everything derived from them is computed once here
and every tick only writes into these arrays."""

from __future__ import annotations

import math

import numpy as np

from diffusion_controller.control.braking import UpperBounds
from diffusion_controller.control.safety_filter._shared import _SOLVER_SLACK_M


class _TickBuffers:
    """A stage of SafetyFilter: its methods read and write the facade\'s state."""

    def _prepare_tick(self) -> None:
        """Constants and buffers of the tick. Limits and dt are fixed for the filter's life;
        everything a tick computes lands in these buffers, so a tick is a fixed sequence of
        numpy calls on preallocated arrays (their count, not their size, is what costs)."""
        lim, dt, n = self._limits, self.dt, self.n
        b = lim.acceleration
        s = len(self.robot.sphere_radii)
        self._amax = b
        self._vel = lim.velocity
        self._neg_vel = -lim.velocity
        self._b2 = np.concatenate((b, b))
        self._vel2 = np.concatenate((lim.velocity, lim.velocity))
        self._viable = UpperBounds(np.concatenate((lim.upper, -lim.lower)), self._b2, dt)
        # jerk can only bind if it is tighter than a full swing of the acceleration box
        jerk_dt = lim.jerk * dt
        self._jerk_dt2 = np.concatenate((jerk_dt, jerk_dt))
        self._jerk_free = bool(np.all(jerk_dt >= 2.0 * b))
        self._q2 = np.empty(2 * n)
        self._v2 = np.empty(2 * n)
        self._box2 = np.empty(2 * n)
        # _commit checks [|v+|, |u|, q+, -q+] against [velocity, acceleration, upper, -lower]
        self._lim4 = np.concatenate((lim.velocity, b, lim.upper, -lim.lower))
        self._chk4 = np.empty(4 * n)
        # a joint this far inside its limits can take a full tick of acceleration and still
        # stop in time (|v| <= the velocity limit, the state the filter commands): then the
        # viability bound is above the acceleration limit and need not be computed. With
        # X = v_max + b dt (the fastest v+), the stop after such a tick needs at most
        # v_max dt/2 + X^2/(2b) + X dt + b dt^2/8 (both forms in braking.UpperBounds).
        fastest = lim.velocity + b * dt
        reach = (0.5 * lim.velocity * dt + fastest * fastest / (2.0 * b) + fastest * dt
                 + b * dt * dt / 8.0)
        self._far2 = np.concatenate((lim.upper - reach, -lim.lower - reach))
        self._ones_n = np.ones(n)
        # barrier-row constants (see _barrier_rows)
        self._bdt = b * dt
        self._inv2b = 0.5 / b
        self._k8 = b * dt * dt / 8.0
        self._c_u = 2.0 / (b * dt)
        self._dd_shift = np.stack([b * dt, 2.0 * b * dt])
        self._dd_const = -0.375 * b * dt * dt
        self._dd = np.empty((2, n))
        # per sphere (and a zero dummy sphere last): [|point Jacobian columns| | curvature / 2],
        # the first block refreshed every tick. One product with
        # [[per-joint reach, 0], [0, outer(dd0)], [0, outer(dd1)]] gives each sphere's screening
        # reach and its linearisation error bounds for this tick and the next.
        k = np.zeros((s + 1, n + n * n))
        k[:s, n:] = 0.5 * self.robot.curvature.reshape(s, -1)
        self._sph_k = k
        self._jp_norm = k[:, :n]
        self._sph_x = np.zeros((3, n + n * n))
        self._pj = self._sph_x[0, :n]
        self._sph_outer = self._sph_x[1:, n:].reshape(2, n, n)
        if not np.shares_memory(self._sph_outer, self._sph_x):
            raise RuntimeError("internal: outer-product buffer is not a view")
        self._sph_y = np.empty((3, s + 1))
        self._jp_sq = np.empty((s + 1, 3, n))
        self._ones3 = np.ones(3)
        self._m2 = np.zeros((2, 3 * n))  # m2 @ [g; |g|; w] -> (braking reach, rhs part)
        self._gamma_seen = math.nan
        self._recovering = False  # inside a barrier margin, moving out
        self._lh = np.empty((2, 2 * n, 1))
        self._uu = np.empty(2 * n)

    def _set_gamma(self, gamma: float) -> None:
        """Refresh the constants that depend on barrier_gamma (a live setting)."""
        n, dt = self.n, self.dt
        self._gamma_seen = gamma
        self._t_comb = np.array([1.0, 1.0 - 1.0 / gamma, 1.0 / gamma])
        self._c_gamma = 2.0 * gamma / (dt * dt)
        self._pj_const = self._k8 + self._amax * dt * dt / gamma
        self._m2[0, n:2 * n] = self._k8
        self._m2[1, n:2 * n] = self._c_gamma * self._k8

    def _alloc_rows(self, count: int) -> None:
        """Per-row buffers for `count` barrier rows (again whenever obstacle slots grow)."""
        self._rb_ta = np.empty(count)
        self._rb_tb = np.empty(count)
        self._rb_mask = np.empty(count, dtype=bool)
        self._rs_empty = self._rs = np.zeros((2 * self.n, 0))
        self._margins_seen = (math.nan,) * 3  # per-row margins: rebuilt at the next tick

    def _refresh_margins(self) -> None:
        """Per-row clearance beyond h (sphere_margin; tool floor rows: tool_clearance; grasp
        rows: grasp_margin), plain and with the solver slack, for the current live settings and
        row layout."""
        cfg = self.config
        self._margins_seen = (cfg.sphere_margin, cfg.tool_clearance, cfg.grasp_margin)
        self._row_margin = self._barriers.row_margins(*self._margins_seen)
        self._row_margin_s = self._row_margin + _SOLVER_SLACK_M
