"""An OSQP problem with a sparsity pattern fixed for life and values refreshed in place.

The filter declares where the nonzeros of A are once (as COO row/column arrays, block by block) and
then, every tick, hands over the values in that same order; this module maps them onto OSQP's CSC
storage with one precomputed gather, so a tick never builds a sparse matrix. OSQP is set up on the
first values it sees, so its scaling matches the real problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import osqp
import scipy.sparse as sp

SOLVED = int(osqp.SolverStatus.OSQP_SOLVED)
SOLVED_INACCURATE = int(osqp.SolverStatus.OSQP_SOLVED_INACCURATE)
INFEASIBLE = {
    int(osqp.SolverStatus.OSQP_PRIMAL_INFEASIBLE),
    int(osqp.SolverStatus.OSQP_PRIMAL_INFEASIBLE_INACCURATE),
}


@dataclass
class QPResult:
    x: np.ndarray
    y: np.ndarray
    status: str
    status_val: int
    iterations: int
    solve_ms: float
    prim_res: float


class FixedPatternQP:
    """min 1/2 x'Px + q'x  s.t.  l <= A x <= u, with P constant and A's pattern fixed.

    `rows`, `cols` give A's nonzeros in the caller's order; `solve(q, a_values, l, u)` takes
    values in that order.
    """

    def __init__(
        self,
        P: sp.spmatrix,
        rows: np.ndarray,
        cols: np.ndarray,
        m: int,
        settings: dict[str, float | int | bool],
        fast: bool = True,
    ) -> None:
        self.n = int(P.shape[0])
        self.m = int(m)
        self.P = sp.triu(sp.csc_matrix(P), format="csc")
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if rows.shape != cols.shape:
            raise ValueError("rows and cols of the pattern differ in length")
        if len(rows) and (rows.max() >= self.m or cols.max() >= self.n):
            raise ValueError("pattern outside the matrix")
        order = np.arange(1, len(rows) + 1, dtype=np.float64)
        probe = sp.csc_matrix((order, (rows, cols)), shape=(self.m, self.n))
        probe.sum_duplicates()
        if probe.nnz != len(rows):
            raise ValueError("pattern has duplicate entries")
        self._gather = probe.data.astype(np.int64) - 1  # CSC slot -> caller's index
        self._indices = probe.indices.copy()
        self._indptr = probe.indptr.copy()
        self.nnz = len(rows)
        self.settings = dict(settings)
        self.fast = fast
        self._solver: osqp.OSQP | None = None
        self._core = None
        self.matrix_updates = 0  # solves that handed OSQP new A values (each refactorises)

    def update_settings(self, **settings: float | int | bool) -> None:
        self.settings.update(settings)
        if self._solver is not None:
            self._solver.update_settings(**settings)

    def _setup(self, q: np.ndarray, ax: np.ndarray, lo: np.ndarray, up: np.ndarray) -> None:
        # Explicit zeros must stay in the pattern: build the CSC arrays by hand and give OSQP a
        # structurally full matrix. OSQP scales rows once, here, so an entry that is zero now
        # (an empty slot) is set up with a unit-size value like those it will carry later.
        data = np.where(ax == 0.0, 0.5, ax)
        A = sp.csc_matrix((data, self._indices, self._indptr), shape=(self.m, self.n))
        solver = osqp.OSQP()
        solver.setup(self.P, q, A, lo, up, verbose=False, **self.settings)
        if np.any(ax == 0.0):  # then the real values, zeros included: a tick may leave A as is
            solver.update(Ax=ax)
        self._solver = solver
        self._infty = float(solver.constant("OSQP_INFTY"))
        self._lo_c = np.empty(self.m)
        self._up_c = np.empty(self.m)
        self._ax = np.empty(self.nnz)
        # The public wrapper spends as long in Python (bound clamping, a derivative cache, an
        # info namespace) as OSQP spends solving these small problems; when the compiled solver
        # it wraps is there, talk to it directly. Otherwise use the public API.
        core = getattr(solver, "_solver", None)
        needed = ("update_data_vec", "update_data_mat", "solve", "info", "solution")
        self._core = core if self.fast and all(hasattr(core, a) for a in needed) else None

    def reset(self) -> None:
        """Forget the solver (and its warm start); the next solve sets OSQP up afresh."""
        self._solver = None
        self._core = None

    def solve(
        self,
        q: np.ndarray,
        a_values: np.ndarray,
        lo: np.ndarray,
        up: np.ndarray,
        a_changed: bool = True,
    ) -> QPResult:
        """Solve with new vectors and A values (in the pattern's order). `a_changed=False` keeps
        A as it was, which spares OSQP a refactorisation."""
        t0 = time.perf_counter()
        if self._solver is None:
            self._setup(q, a_values[self._gather], lo, up)
        elif self._core is not None:
            core = self._core
            lo_c, up_c = self._lo_c, self._up_c
            np.maximum(lo, -self._infty, out=lo_c)
            np.minimum(up, self._infty, out=up_c)
            core.update_data_vec(q, lo_c, up_c)
            if a_changed:
                self.matrix_updates += 1
                a_values.take(self._gather, out=self._ax, mode="clip")
                core.update_data_mat(None, None, self._ax, None)
            core.solve()
            return _result(core.solution, core.info, t0)
        elif a_changed:
            self.matrix_updates += 1
            self._solver.update(q=q, l=lo, u=up, Ax=a_values[self._gather])
        else:
            self._solver.update(q=q, l=lo, u=up)
        res = self._solver.solve(raise_error=False)
        return _result(res, res.info, t0)


def _result(sol: Any, info: Any, t0: float) -> QPResult:
    """A QPResult from OSQP's solution (x, y) and info, copied out of the solver's buffers."""
    return QPResult(
        x=np.array(sol.x, dtype=np.float64),
        y=np.array(sol.y, dtype=np.float64),
        status=str(info.status),
        status_val=int(info.status_val),
        iterations=int(info.iter),
        solve_ms=(time.perf_counter() - t0) * 1e3,
        prim_res=float(info.prim_res),
    )
