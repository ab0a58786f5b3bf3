"""Kinematics for the safety filter: a reduced pinocchio model, link collision spheres, Jacobians.

The filter needs, every tick and in one pass, where each collision sphere is, how it moves with
each joint, and bounds on how far a linear prediction of that motion can be off. One call to
`pinocchio.computeJointJacobians` gives all joint placements and the world-frame joint Jacobian;
sphere positions and point Jacobians follow by vectorised numpy, so the cost does not grow with a
Python loop over spheres. Reading the URDF and reducing it to the controlled joints is
control/urdf_reduction.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pinocchio as pin

from diffusion_controller.control import panda
from diffusion_controller.control.types import JointLimits
from diffusion_controller.control.urdf_reduction import BIG_LIMIT, reduce_urdf


def frame_parent_joint(frame: pin.Frame) -> int:
    """The joint a frame hangs on: `parentJoint` from pinocchio 3, `parent` in 2.6 (ROS Humble's
    and JetPack's pinocchio), which 3.x still has but deprecates."""
    parent = getattr(frame, "parentJoint", None)
    return int(frame.parent if parent is None else parent)


class RobotModel:
    """A pinocchio model reduced to the controlled joints, with link collision spheres.

    Joint order is the caller's `joint_names`; every array in and out follows it. Spheres are
    given per link (any frame of the URDF) in that link's frame and reported in the base frame.
    """

    def __init__(
        self,
        model: pin.Model,
        joint_names: Sequence[str],
        spheres: Mapping[str, Sequence[Sequence[float]]],
        locked: Mapping[str, float],
        urdf_info: dict[str, dict[str, object]],
        ee_frame: str | None = None,
    ) -> None:
        self.model = model
        self.data = model.createData()
        self.joint_names = list(joint_names)
        self.locked = dict(locked)
        self._urdf_info = urdf_info
        n = len(self.joint_names)
        self.nq = n
        model_names = list(model.names)[1:]
        # perm[i] = model index (0-based) of the caller's joint i
        self._perm = np.array([model_names.index(name) for name in self.joint_names])
        self._inv = np.argsort(self._perm)
        self._build_spheres(spheres)
        if ee_frame is None:
            ee_frame = panda.PANDA_EE_FRAME if model.existFrame(panda.PANDA_EE_FRAME) else None
        if ee_frame is None:
            ee_frame = model.frames[len(model.frames) - 1].name
        if not model.existFrame(ee_frame):
            raise ValueError(f"unknown end-effector frame {ee_frame!r}")
        self.ee_frame = ee_frame
        self._ee_fid = model.getFrameId(ee_frame)
        ee_joint = frame_parent_joint(model.frames[self._ee_fid])
        self._ee_local = model.frames[self._ee_fid].placement.translation.copy()
        self._ee_joint = ee_joint
        self._ee_mask = self._support_mask(ee_joint)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_urdf(
        cls,
        urdf: str,
        joint_names: Sequence[str] | None = None,
        spheres: Mapping[str, Sequence[Sequence[float]]] | None = None,
        locked: Mapping[str, float] | None = None,
        ee_frame: str | None = None,
    ) -> RobotModel:
        """Build from a URDF (XML string or file path).

        `joint_names` defaults to the URDF's revolute joints in document order. Every other
        movable joint is locked: at `locked[name]` if given, else at the middle of its range (for
        the Panda fingers that is mid-travel, which the default finger spheres assume). `spheres`
        defaults to the Panda sphere set when the URDF has the Panda links.
        """
        reduced, joint_names, resolved, info = reduce_urdf(urdf, joint_names, locked)
        if spheres is None:
            if all(reduced.existFrame(link) for link in panda.PANDA_SPHERES):
                spheres = panda.PANDA_SPHERES
            else:
                warnings.warn(
                    "no collision spheres given and the URDF is not a Panda: Cartesian barriers "
                    "will have nothing to act on",
                    stacklevel=2,
                )
                spheres = {}
        return cls(reduced, joint_names, spheres, resolved, info, ee_frame=ee_frame)

    def _support_mask(self, joint_id: int) -> np.ndarray:
        """Which of the caller's joints move a body attached to pinocchio joint `joint_id`."""
        mask = np.zeros(self.nq, dtype=bool)
        j = joint_id
        while j > 0:
            mask[self._inv[j - 1]] = True
            j = self.model.parents[j]
        return mask

    def _build_spheres(self, spheres: Mapping[str, Sequence[Sequence[float]]]) -> None:
        model = self.model
        groups: list[str] = []
        parents: list[int] = []
        local: list[np.ndarray] = []
        radii: list[float] = []
        for link, items in spheres.items():
            if not model.existFrame(link):
                raise ValueError(f"sphere link {link!r} is not a frame of the model")
            frame = model.frames[model.getFrameId(link)]
            for item in items:
                arr = np.asarray(item, dtype=np.float64).reshape(-1)
                if arr.shape != (4,) or not np.all(np.isfinite(arr)) or arr[3] <= 0:
                    raise ValueError(f"sphere on {link!r} must be finite (x, y, z, r>0): {item}")
                groups.append(link)
                parents.append(frame_parent_joint(frame))
                local.append(frame.placement.act(arr[:3]))
                radii.append(float(arr[3]))
        self.sphere_groups = groups
        self.sphere_radii = np.asarray(radii, dtype=np.float64)
        self._sphere_parent = np.asarray(parents, dtype=np.int64)
        self._sphere_local = np.asarray(local, dtype=np.float64).reshape(-1, 3)
        self._joints_used = sorted({p for p in parents if p > 0})
        self._slot = {j: k for k, j in enumerate(self._joints_used)}
        s = len(radii)
        self._sphere_mask = np.zeros((s, self.nq), dtype=bool)
        for k, p in enumerate(parents):
            self._sphere_mask[k] = self._support_mask(p)
        self.moving = self._sphere_mask.any(axis=1)
        # Fixed-base spheres: their world position never changes.
        self._static_pos = self._sphere_local.copy()
        self._sphere_slot = np.array([self._slot.get(p, -1) for p in parents], dtype=np.int64)
        self._sel = self._sphere_slot >= 0
        self._sphere_slot_m = self._sphere_slot[self._sel]
        self._local_sel = self._sphere_local[self._sel]
        self._compute_bounds()

    def _compute_bounds(self) -> None:
        """Lever arms R[s, j] >= |p_s - o_j| over all configurations (triangle inequality along the
        chain), and the second-order bound C[s, i, j] >= |d^2 p_s / dq_i dq_j|, used to bound how
        far a first-order prediction of a sphere's motion can be off."""
        model = self.model
        s = len(self.sphere_radii)
        lever = np.zeros((s, self.nq))
        for k in range(s):
            dist = float(np.linalg.norm(self._sphere_local[k]))
            j = int(self._sphere_parent[k])
            while j > 0:
                joint = model.joints[j]
                col = self._inv[j - 1]
                if joint.shortname().startswith("JointModelP"):
                    lever[k, col] = 1.0  # a prismatic column has unit norm
                    lo = abs(float(model.lowerPositionLimit[joint.idx_q]))
                    hi = abs(float(model.upperPositionLimit[joint.idx_q]))
                    dist += min(max(lo, hi), BIG_LIMIT)
                else:
                    lever[k, col] = dist
                dist += float(np.linalg.norm(model.jointPlacements[j].translation))
                j = model.parents[j]
        self.lever = lever
        order = self._perm  # model index of each of the caller's joints
        cols = np.arange(self.nq)
        later = np.where(order[:, None] >= order[None, :], cols[:, None], cols[None, :])
        self.curvature = lever[:, later]  # [S, J, J]: R of the later joint of each pair

    # ------------------------------------------------------------------ kinematics
    def _check_q(self, q: np.ndarray) -> np.ndarray:
        arr = np.asarray(q, dtype=np.float64).reshape(-1)
        if arr.shape != (self.nq,):
            raise ValueError(f"q has {arr.shape[0]} values for {self.nq} joints")
        if not np.all(np.isfinite(arr)):
            raise ValueError("q is not finite")
        return arr

    def kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sphere centres [S,3], the world-frame joint Jacobian [6,J] (linear part is the velocity
        of the body point at the base origin) and the end-effector Jacobian [6,J].

        One forward pass for everything the filter needs at a tick; q must be finite and of the
        right size (the filter checks before calling). A sphere's point Jacobian is
        `jw[:3] + omega x p` over the joints that move it (see `point_jacobians`).
        """
        pin.computeJointJacobians(self.model, self.data, q[self._inv])
        jw = self.data.J[:, self._perm]  # world-frame joint Jacobian, caller's joint order
        pos = self._static_pos.copy()
        oMi = self.data.oMi
        if self._joints_used:
            h = np.array([oMi[j].homogeneous for j in self._joints_used])[self._sphere_slot_m]
            pos[self._sel] = (h[:, :3, :3] @ self._local_sel[:, :, None])[:, :, 0] + h[:, :3, 3]
        x, y, z = oMi[self._ee_joint].act(self._ee_local)
        ee = jw * self._ee_mask
        ee[:3] -= np.array(((0.0, -z, y), (z, 0.0, -x), (-y, x, 0.0))) @ ee[3:]  # + w x p
        return pos, jw, ee

    def tick_kinematics(self) -> Any:
        """A per-tick kinematics kernel with its own buffers and pinocchio Data
        (control/tick_kinematics.py); each user (e.g. each safety filter) should hold its own."""
        from diffusion_controller.control.tick_kinematics import TickKinematics

        return TickKinematics(self)

    def point_jacobians(self, pos: np.ndarray, jw: np.ndarray) -> np.ndarray:
        """Translational Jacobians [S,3,J] of the sphere centres from `kinematics` output."""
        lin = jw[:3][None, :, :] + np.cross(jw[3:].T[None, :, :], pos[:, None, :]).transpose(
            0, 2, 1
        )
        return lin * self._sphere_mask[:, None, :]

    def sphere_positions(self, q: np.ndarray) -> np.ndarray:
        """Collision sphere centres in the base frame, [S, 3]."""
        return self.kinematics(self._check_q(q))[0]

    def sphere_jacobians(self, q: np.ndarray) -> np.ndarray:
        """Translational Jacobians of the sphere centres in the base frame, [S, 3, J]."""
        pos, jw, _ = self.kinematics(self._check_q(q))
        return self.point_jacobians(pos, jw)

    def frame_pose(self, q: np.ndarray, frame: str) -> np.ndarray:
        """4x4 homogeneous pose of any model frame in the base frame."""
        if not self.model.existFrame(frame):
            raise ValueError(f"unknown frame {frame!r}")
        q = self._check_q(q)
        pin.framesForwardKinematics(self.model, self.data, q[self._inv])
        return self.data.oMf[self.model.getFrameId(frame)].homogeneous.copy()

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        """Position of the end-effector frame in the base frame, [3]."""
        return self.frame_pose(q, self.ee_frame)[:3, 3]

    def ee_jacobian(self, q: np.ndarray) -> np.ndarray:
        """6 x J Jacobian of the end-effector frame (linear at its origin, base-frame axes)."""
        return self.kinematics(self._check_q(q))[2]

    def manipulability(self, q: np.ndarray) -> float:
        """Yoshikawa manipulability sqrt(det(J J^T)) of the end-effector Jacobian."""
        return manipulability_of(self.ee_jacobian(q))

    def condition_number(self, q: np.ndarray) -> float:
        """Ratio of the largest to the smallest singular value of the end-effector Jacobian."""
        sv = np.linalg.svd(self.ee_jacobian(q), compute_uv=False)
        return float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf

    # ------------------------------------------------------------------ limits
    def urdf_limits(
        self,
        acceleration: Sequence[float] | None = None,
        jerk: Sequence[float] | None = None,
    ) -> JointLimits:
        """Position and velocity limits from the URDF; acceleration and jerk from the URDF's
        <limit acceleration=.. jerk=..> when present, else the given values, else the Panda
        datasheet values for Panda joint names (see control/panda.py)."""
        lower = np.empty(self.nq)
        upper = np.empty(self.nq)
        vel = np.empty(self.nq)
        for i, name in enumerate(self.joint_names):
            joint = self.model.joints[self.model.getJointId(name)]
            lo = float(self.model.lowerPositionLimit[joint.idx_q])
            hi = float(self.model.upperPositionLimit[joint.idx_q])
            lower[i] = lo if abs(lo) < BIG_LIMIT else -math.inf
            upper[i] = hi if abs(hi) < BIG_LIMIT else math.inf
            vel[i] = float(self.model.velocityLimit[joint.idx_v])
        acc = self._extra_limit("acceleration", acceleration, panda.PANDA_ACCELERATION)
        jrk = self._extra_limit("jerk", jerk, panda.PANDA_JERK)
        return JointLimits(list(self.joint_names), lower, upper, vel, acc, jrk)

    def _extra_limit(
        self, key: str, given: Sequence[float] | None, datasheet: np.ndarray
    ) -> np.ndarray:
        if given is not None:
            arr = np.asarray(given, dtype=np.float64).reshape(-1)
            if arr.shape != (self.nq,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise ValueError(f"{key} limits must be {self.nq} positive finite values")
            return arr
        out = np.empty(self.nq)
        for i, name in enumerate(self.joint_names):
            attr = self._urdf_info.get(name, {}).get("limit", {})
            value = attr.get(key) if isinstance(attr, dict) else None
            if value is not None:
                out[i] = float(value)
            elif name in panda.PANDA_JOINT_NAMES:
                out[i] = datasheet[panda.PANDA_JOINT_NAMES.index(name)]
            else:
                raise ValueError(
                    f"no {key} limit for joint {name!r}: the URDF has none and it is not a "
                    f"Panda joint; pass {key}= explicitly"
                )
        return out


def manipulability_of(jac: np.ndarray) -> float:
    """Yoshikawa measure sqrt(det(J J^T)), 0 at a singularity."""
    det = float(np.linalg.det(jac @ jac.T))
    return math.sqrt(det) if det > 0 else 0.0
