"""Module constants the safety filter's stages share (kept apart so no stage imports another)."""

from __future__ import annotations

import numpy as np

_SOLVER_SLACK_M = 1e-5  # metres the barrier rows are tightened by, to absorb OSQP's tolerance
_sum = np.add.reduce  # the ufunc itself: ndarray.sum() adds a Python-level wrapper per call

_EMPTY = np.zeros(0)
_EMPTY_INDEX = np.zeros(0, dtype=np.int64)
