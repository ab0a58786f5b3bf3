"""FixedPatternQP: values in the caller's order land in the right places, both OSQP call paths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from diffusion_controller.control.qp import SOLVED, FixedPatternQP

SETTINGS = {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iter": 20000, "polishing": True}


def _problem(fast: bool) -> FixedPatternQP:
    # min (x0 - 3)^2 + (x1 + 1)^2  s.t.  l <= [x0; x1; x0 + x1] <= u ; pattern given out of order
    rows = np.array([2, 0, 2, 1])
    cols = np.array([1, 0, 0, 1])
    return FixedPatternQP(sp.diags([2.0, 2.0]), rows, cols, 3, SETTINGS, fast=fast)


@pytest.mark.parametrize("fast", [True, False])
def test_values_follow_the_pattern_order(fast: bool) -> None:
    qp = _problem(fast)
    q = np.array([-6.0, 2.0])
    inf = np.inf
    # A = [[1, 0], [0, 1], [1, 1]] given as values for (2,1), (0,0), (2,0), (1,1)
    vals = np.array([1.0, 1.0, 1.0, 1.0])
    res = qp.solve(q, vals, np.array([-inf, -inf, -inf]), np.array([inf, inf, 1.0]))
    assert res.status_val == SOLVED
    np.testing.assert_allclose(res.x, [2.5, -1.5], atol=1e-5)  # projection onto x0 + x1 <= 1
    # second solve: the sum row becomes x0 - x1 <= 1 (value of (2,1) changes to -1)
    vals2 = np.array([-1.0, 1.0, 1.0, 1.0])
    res = qp.solve(q, vals2, np.array([-inf, -inf, -inf]), np.array([inf, inf, 1.0]))
    np.testing.assert_allclose(res.x, [1.5, 0.5], atol=1e-5)
    # a_changed=False keeps the last A even if other values are passed
    res = qp.solve(q, vals, np.array([-inf, -inf, -inf]), np.array([inf, inf, 1.0]),
                   a_changed=False)
    np.testing.assert_allclose(res.x, [1.5, 0.5], atol=1e-5)
    # explicit zeros stay in the pattern: the sum row can vanish and come back
    res = qp.solve(q, np.array([0.0, 1.0, 0.0, 1.0]), np.array([-inf, -inf, -inf]),
                   np.array([inf, inf, 1.0]))
    np.testing.assert_allclose(res.x, [3.0, -1.0], atol=1e-5)


def test_pattern_errors() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        FixedPatternQP(sp.eye(2), np.array([0, 0]), np.array([1, 1]), 1, SETTINGS)
    with pytest.raises(ValueError, match="outside"):
        FixedPatternQP(sp.eye(2), np.array([3]), np.array([0]), 1, SETTINGS)
