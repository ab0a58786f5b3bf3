"""The safety filter's per-tick kinematics kernel: sphere centres, the joint Jacobian, the point
Jacobians of every sphere and the manipulability, computed into preallocated buffers with a
handful of numpy calls (no Python loop over spheres), from a RobotModel's reduced pinocchio model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pinocchio as pin


def _fast_det() -> Callable[[np.ndarray], float]:
    """numpy's determinant without the Python-side argument checks of np.linalg.det (a third of
    a 6x6 determinant's cost in the 100 Hz tick). The gufunc is numpy's own (private) kernel,
    so it is used only if it is there and agrees with np.linalg.det; otherwise the public one."""
    try:
        from numpy.linalg import _umath_linalg

        kernel = _umath_linalg.det
        probe = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]])
        if abs(float(kernel(probe)) - float(np.linalg.det(probe))) <= 1e-12:
            return kernel
    except Exception:  # any numpy without that kernel: use the public function
        pass
    return np.linalg.det


_det = _fast_det()


class TickKinematics:
    """Everything the safety filter needs from the robot at one tick, computed into preallocated
    buffers with a handful of numpy calls: sphere centres `pos` [S, 3], the world-frame joint
    Jacobian `jw` [6, J] (caller's joint order), the point Jacobians of all sphere centres
    `jp` [S + 1, 3, J] (the last one is a fixed point, all zeros, for rows that involve a single
    sphere) and Yoshikawa manipulability.

    It owns its pinocchio Data, so another thread using the RobotModel (e.g. a monitor computing
    FK) can never change what a tick is reading. The arrays are overwritten by the next `update`.
    """

    def __init__(self, robot: Any) -> None:
        """`robot`: the control.robot_model.RobotModel whose model and spheres it reads."""
        self.robot = robot
        model = robot.model
        n, s = robot.nq, len(robot.sphere_radii)
        self.nq = n
        self._model = model
        self._data = model.createData()
        self._look = model.createData()  # for look-ahead queries inside a tick
        self._ordered = bool(np.array_equal(robot._perm, np.arange(n)))
        self._inv = robot._inv
        self._perm = robot._perm
        nj = model.njoints
        # sphere centres: every joint placement (universe first, the identity) times every
        # sphere's local point in one product, then each sphere's own entry picked out
        self._local_h = np.ones((4, s))
        self._local_h[:3] = robot._sphere_local.T
        self._hom = np.empty((4 * nj, s))
        parent = np.maximum(robot._sphere_parent, 0)
        self._pick = ((4 * parent[:, None] + np.arange(3)[None, :]) * s
                      + np.arange(s)[:, None]).reshape(-1)
        self.pos = np.empty((s, 3))
        self._pos_flat = self.pos.reshape(-1)
        self.jw = np.empty((6, n))
        # point Jacobians: [I | -[p]x] @ jw for all spheres at once, then masked to the joints
        # that move each sphere. Rows 3s..3s+2 of `_lift` belong to sphere s.
        self._lift = np.zeros((3 * s, 6))
        rows = np.arange(3 * s)
        self._lift[rows, rows % 3] = 1.0
        # -[p]x = [[0, z, -y], [-z, 0, x], [y, -x, 0]]: (row in the 3-block, column, source, sign)
        spec = [(0, 4, 2, 1.0), (0, 5, 1, -1.0), (1, 3, 2, -1.0), (1, 5, 0, 1.0),
                (2, 3, 1, 1.0), (2, 4, 0, -1.0)]
        base = 3 * np.arange(s)[:, None]
        self._skew_dst = ((base + np.array([r for r, _, _, _ in spec])) * 6
                          + np.array([c for _, c, _, _ in spec])).reshape(-1)
        self._skew_src = (base + np.array([k for _, _, k, _ in spec])).reshape(-1)
        self._skew_sign = np.tile(np.array([g for _, _, _, g in spec]), s)
        self._skew_vals = np.empty(6 * s)
        self.jp = np.zeros((s + 1, 3, n))
        self._jp_flat = self.jp.reshape(-1, n)[:3 * s]
        self._jp_mask = np.repeat(robot._sphere_mask.astype(np.float64), 3, axis=0)
        self._ee_all = bool(robot._ee_mask.all())
        self._ee_mask = robot._ee_mask.astype(np.float64)

    def update(self, q: np.ndarray) -> None:
        """Kinematics at q (finite, caller's joint order; the filter has checked it)."""
        data = self._data
        pin.computeJointJacobians(self._model, data, q if self._ordered else q[self._inv])
        if self._ordered:  # pinocchio's own array, which only this kernel's updates rewrite
            self.jw = data.J
        else:
            data.J.take(self._perm, axis=1, out=self.jw, mode="clip")
        # (array methods with mode="clip": np.take buffers `out` and costs several times more)
        hom = np.array([m.homogeneous for m in data.oMi.tolist()]).reshape(-1, 4)
        np.matmul(hom, self._local_h, out=self._hom)
        self._hom.take(self._pick, out=self._pos_flat, mode="clip")
        self._pos_flat.take(self._skew_src, out=self._skew_vals, mode="clip")
        np.multiply(self._skew_vals, self._skew_sign, out=self._skew_vals)
        self._lift.put(self._skew_dst, self._skew_vals)
        np.matmul(self._lift, self.jw, out=self._jp_flat)
        np.multiply(self._jp_flat, self._jp_mask, out=self._jp_flat)

    def manipulability(self) -> float:
        """Yoshikawa manipulability of the end effector at the last `update`. Shifting the
        reference point of a 6-row Jacobian multiplies it by a unit-triangular matrix, which
        leaves det(J J^T) unchanged, so the joint Jacobian gives the end effector's value."""
        return self._manip(self.jw)

    def manipulability_at(self, q: np.ndarray) -> float:
        """Manipulability at another configuration (a look-ahead), leaving `update`'s arrays."""
        data = self._look
        pin.computeJointJacobians(self._model, data, q if self._ordered else q[self._inv])
        return self._manip(data.J if self._ordered else data.J[:, self._perm])

    def _manip(self, jw: np.ndarray) -> float:
        if not self._ee_all:
            jw = jw * self._ee_mask
        det = float(_det(np.dot(jw, jw.T)))
        return math.sqrt(det) if det > 0 else 0.0
