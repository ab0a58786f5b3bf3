"""Panda kinematics for the simulator's own use: tool-point FK and a damped least-squares IK.

The task sampler needs the start configuration's tool position and the demonstrator needs IK for
its Cartesian waypoints. Both use pinocchio on the same URDF that PyBullet simulates, with the two
finger joints locked closed, so that what is planned is what is simulated. The control core has its
own robot model (control/robot_model.py); this one stays inside sim/ so the simulator does not
depend on the controller it is used to test.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pinocchio as pin

from diffusion_controller.control.panda import panda_urdf_path

ARM_JOINTS: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
TOOL_FRAME = "panda_grasptarget"  # midpoint between the closed fingertips, 0.105 m below the flange
# The Panda's "ready" posture: a comfortable, symmetric configuration the IK is biased toward.
READY_Q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


class PandaKinematics:
    """Tool-point kinematics of the 7 arm joints (fingers locked closed)."""

    def __init__(self, urdf_path: str | None = None) -> None:
        full = pin.buildModelFromUrdf(urdf_path or panda_urdf_path())
        lock = [full.getJointId(name) for name in FINGER_JOINTS]
        self.model = pin.buildReducedModel(full, lock, pin.neutral(full))
        self.data = self.model.createData()
        names = [self.model.names[i] for i in range(1, self.model.njoints)]
        if tuple(names) != ARM_JOINTS:
            raise ValueError(f"unexpected Panda joints after locking fingers: {names}")
        self.tool = self.model.getFrameId(TOOL_FRAME)
        self.lower = np.array(self.model.lowerPositionLimit)
        self.upper = np.array(self.model.upperPositionLimit)
        self.velocity = np.array(self.model.velocityLimit)
        # The demonstrator keeps the hand pointing straight down with the ready posture's yaw, so
        # the fingers' wide side faces the robot's left and right.
        self.down = self.tool_pose(READY_Q)[1]

    def tool_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool point position [3] and rotation [3, 3] in the base frame."""
        pin.framesForwardKinematics(self.model, self.data, np.asarray(q, dtype=np.float64))
        m = self.data.oMf[self.tool]
        return m.translation.copy(), m.rotation.copy()

    def tool_position(self, q: np.ndarray) -> np.ndarray:
        return self.tool_pose(q)[0]

    def ik(
        self,
        position: np.ndarray,
        q_init: np.ndarray,
        rotation: np.ndarray | None = None,
        rest: np.ndarray | None = None,
        tol: float = 1e-6,
        max_iters: int = 200,
        min_iters: int = 1,
        posture_gain: float = 0.1,
    ) -> tuple[np.ndarray, float]:
        """Damped least squares toward a tool pose; the null space pulls toward `rest`.

        Returns (q, residual norm). Along a densely sampled path, starting from the previous
        solution with a fixed `min_iters` behaves like resolved-rate control: the task error is
        removed at once and the posture relaxes smoothly toward `rest`, so the joint path is smooth.
        """
        target_r = self.down if rotation is None else rotation
        rest_q = READY_Q if rest is None else rest
        q = np.clip(np.asarray(q_init, dtype=np.float64).copy(), self.lower, self.upper)
        eye7 = np.eye(7)
        err = np.inf
        margin = 1e-3
        for it in range(max_iters):
            pin.framesForwardKinematics(self.model, self.data, q)
            m = self.data.oMf[self.tool]
            e = np.concatenate([position - m.translation, pin.log3(target_r @ m.rotation.T)])
            err = float(np.linalg.norm(e))
            if err < tol and it >= min_iters:
                break
            jac = pin.computeFrameJacobian(
                self.model, self.data, q, self.tool, pin.LOCAL_WORLD_ALIGNED
            )
            damped = jac.T @ np.linalg.solve(jac @ jac.T + 1e-6 * np.eye(6), np.eye(6))
            null = eye7 - np.linalg.pinv(jac, rcond=1e-3) @ jac
            dq = damped @ e + null @ (posture_gain * (rest_q - q))
            step = float(np.max(np.abs(dq)))
            if step > 0.3:  # keep each update small so the solution stays on its branch
                dq *= 0.3 / step
            q = np.clip(q + dq, self.lower + margin, self.upper - margin)
        return q, err


@lru_cache(maxsize=1)
def panda_kinematics() -> PandaKinematics:
    """One shared instance per process (building the pinocchio model costs a few ms)."""
    return PandaKinematics()
