"""The simulated Panda on a table, with a fixed RGB camera and physics-based contact reporting.

PyBullet in DIRECT mode: no window, CPU rendering with the tiny renderer, every call on this world's
own physicsClientId so several worlds could share a process. The world frame is the robot base
frame (panda_link0): x forward, y left, z up, and the table top is the plane z = 0. The arm's body
(URDF, joint indices, limits, colours) is loaded by sim/panda_body.py, the task's objects by
sim/scene.py.

The 7 arm joints are position controlled toward the latest commanded target, like a ros2_control
forward position controller in front of a stiff joint impedance controller: PyBullet's motor
constraint with the URDF effort limits, and a velocity feed-forward taken from the difference of
successive commands so that a smooth 100 Hz command stream is tracked with a few milliradians of
lag. The two fingers are position controlled toward the gripper command (`command_gripper`, each
finger's opening in metres, 0 closed .. 0.04 open) at a bounded speed (`finger_speed`) and with a
bounded force (`finger_force`), so a closing hand stops on an object and squeezes it with that
force; without a gripper command they stay where the task starts them (closed for the reach task).

Objects: the reach task's obstacle and target disc, or the pick-and-place task's cube (a dynamic
body the hand may touch) and bins (static, like the table: touching them is a collision).

Collisions are whatever physics says: contact points between the arm and the obstacle or the table
with a penetration deeper than `contact_depth` (or a normal force above `contact_force`) count, and
a new contact between a link and an object after a gap is one collision event. `min_clearance` is
the closest distance between the arm and the obstacle from PyBullet's closest-point query.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field

import numpy as np
import pybullet as p
import pybullet_data

from diffusion_controller.settings.sim import SIM_SPECS
from diffusion_controller.settings.spec import check_fields
from diffusion_controller.sim.kinematics import ARM_JOINTS, FINGER_JOINTS
from diffusion_controller.sim.panda_body import load_panda
from diffusion_controller.sim.scene import TaskScene
from diffusion_controller.sim.task import TaskSpec

TABLE_RGBA = (0.55, 0.6, 0.75, 1.0)  # muted blue-grey
FINGER_TRAVEL = 0.04  # each Panda finger opens 0..4 cm (URDF limit)


@dataclass
class WorldConfig:
    # sim_arm's settings of these names (settings/sim.py): defaults and ranges are written there
    timestep: float = SIM_SPECS["timestep"].default
    gravity: float = -9.81
    image_width: int = SIM_SPECS["image_width"].default
    image_height: int = SIM_SPECS["image_height"].default
    # A frontal view from high above the far side of the table, looking back down at the robot:
    # target, obstacle, hand and both passages are in view (the upper arm is cut off at the top);
    # the robot's left (+y) appears on the image's right.
    camera_eye: tuple[float, float, float] = (1.15, 0.0, 1.35)
    camera_target: tuple[float, float, float] = (0.42, 0.0, 0.16)
    camera_fov_deg: float = 44.0
    position_gain: float = 0.3
    velocity_gain: float = 1.0
    contact_depth: float = 0.001  # metres of penetration that count as a collision
    contact_force: float = 5.0  # newtons that count as a collision even without penetration
    clearance_range: float = 0.5  # closest-point queries look this far
    table_half_extent: tuple[float, float] = (0.9, 0.8)
    # Draw the arm with its collision meshes (~2k triangles) instead of the visual ones (~100k):
    # rendering drops from ~20 ms to ~2 ms a frame and the 96x96 image loses nothing visible.
    low_poly_visuals: bool = True
    # The hand: Franka's is rated 70 N continuous grasp force and 0.05 m/s per finger. Each finger
    # motor here pushes with at most `finger_force` (the squeeze an object held between the two
    # feels) and moves at most `finger_speed`; `finger_friction` is the pads' and the cube's
    # Coulomb friction coefficient (rubber on painted wood or plastic: about 1).
    finger_force: float = 40.0
    finger_speed: float = 0.05
    finger_friction: float = 1.0


@dataclass
class ContactState:
    """Contacts found during the last `step`, and running totals since the last reset."""

    in_contact: bool = False
    # (link, "obstacle" | "table" | "bin_<name>")
    pairs: list[tuple[str, str]] = field(default_factory=list)
    new_events: int = 0
    events: int = 0
    max_depth: float = 0.0  # deepest penetration in the last step (m, positive)
    max_force: float = 0.0  # largest normal force in the last step (N)


class SimWorld(TaskScene):
    """One simulated arm with its task scene. Not thread-safe: use it from one thread."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        c = self.config
        check_fields(c, SIM_SPECS)  # timestep and image size within the sim table's ranges
        self.cid = p.connect(p.DIRECT)
        self._closed = False
        pid = self.cid
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=pid)
        p.setGravity(0.0, 0.0, c.gravity, physicsClientId=pid)
        p.setTimeStep(c.timestep, physicsClientId=pid)
        body = load_panda(pid, c.low_poly_visuals, c.finger_friction)
        self.robot = body.robot
        self.urdf_path, self.urdf_text, self._tmpdir = body.urdf_path, body.urdf_text, body.tmpdir
        self.link_names = body.link_names
        self.arm_idx, self.finger_idx = body.arm_idx, body.finger_idx
        self.lower, self.upper = body.lower, body.upper
        self.effort, self.velocity_limit = body.effort, body.velocity_limit
        self.tool_link = body.tool_link
        self.joint_names: list[str] = list(ARM_JOINTS) + list(FINGER_JOINTS)
        self.arm_joint_names: list[str] = list(ARM_JOINTS)

        hx, hy = c.table_half_extent
        table_col = p.createCollisionShape(
            p.GEOM_BOX, halfExtents=[hx, hy, 0.025], physicsClientId=pid
        )
        table_vis = p.createVisualShape(
            p.GEOM_BOX, halfExtents=[hx, hy, 0.025], rgbaColor=TABLE_RGBA, physicsClientId=pid
        )
        self.table = p.createMultiBody(
            0.0, table_col, table_vis, basePosition=[hx - 0.3, 0.0, -0.025], physicsClientId=pid
        )
        # The base is bolted to the table: their touching is not a collision.
        p.setCollisionFilterPair(self.robot, self.table, -1, -1, 0, physicsClientId=pid)
        self.obstacle: int | None = None
        self.target_marker: int | None = None
        self.cube: int | None = None
        self.bins: dict[int, str] = {}  # body -> bin name
        self._finger_cmd = np.zeros(2)
        self.spec: TaskSpec | None = None

        self._view = p.computeViewMatrix(c.camera_eye, c.camera_target, [0, 0, 1])
        self._proj = p.computeProjectionMatrixFOV(
            c.camera_fov_deg, c.image_width / c.image_height, 0.05, 5.0
        )
        self.time = 0.0
        self._steps = 0
        self._q_cmd = np.zeros(7)
        self._v_ff = np.zeros(7)
        self._cmd_time: float | None = None
        self._touching: set[tuple[int, int]] = set()
        self.contacts = ContactState()
        self.set_joint_state(np.zeros(7) if self.spec is None else self.spec.start_q)

    # --- scene ----------------------------------------------------------------------------------
    def reset(self, spec: TaskSpec | None = None, q: np.ndarray | None = None) -> None:
        """Put the task's objects in place and the arm at rest at `q` (default: the start pose)."""
        if spec is not None:
            self._clear_scene()
            if getattr(spec, "task", "panda_reach") == "pick_place":
                self._build_pick_place(spec)
            else:
                self._build_reach(spec)
            self.spec = spec
        elif self.cube is not None and self.spec is not None:  # same scene: the cube back in place
            p.resetBasePositionAndOrientation(
                self.cube, list(self.spec.cube), [0.0, 0.0, 0.0, 1.0], physicsClientId=self.cid
            )
            p.resetBaseVelocity(self.cube, [0.0] * 3, [0.0] * 3, physicsClientId=self.cid)
        start = q if q is not None else (self.spec.start_q if self.spec is not None else None)
        fingers = float(getattr(self.spec, "start_fingers", 0.0))
        self.set_joint_state(np.zeros(7) if start is None else start, fingers)
        self.time = 0.0
        self._steps = 0
        self._touching.clear()
        self.contacts = ContactState()

    # --- the hand and the cube ------------------------------------------------------------------
    def command_gripper(self, fingers: np.ndarray) -> None:
        """Set each finger's target opening (m, panda_finger_joint1, 2), clipped to 0..0.04.

        Raises ValueError for a wrong size or non-finite values (the previous target stays).
        """
        arr = np.asarray(fingers, dtype=np.float64).reshape(-1)
        if arr.shape != (2,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"expected 2 finite finger positions, got {arr.tolist()}")
        self._finger_cmd = np.clip(arr, 0.0, FINGER_TRAVEL)
        self._apply_motors()

    def finger_command(self) -> np.ndarray:
        return self._finger_cmd.copy()

    def set_joint_state(self, q: np.ndarray, fingers: float = 0.0) -> None:
        """Teleport the arm to `q` and both fingers to `fingers` at rest, and hold them there."""
        q = self._validated(q)
        for j, qj in zip(self.arm_idx, q, strict=False):
            p.resetJointState(self.robot, j, float(qj), 0.0, physicsClientId=self.cid)
        f = float(np.clip(fingers, 0.0, FINGER_TRAVEL))
        for j in self.finger_idx:
            p.resetJointState(self.robot, j, f, 0.0, physicsClientId=self.cid)
        self._finger_cmd = np.full(2, f)
        self._q_cmd = q.copy()
        self._v_ff = np.zeros(7)
        self._cmd_time = None
        self._apply_motors()

    # --- commands and stepping ------------------------------------------------------------------
    def command(self, q_target: np.ndarray) -> None:
        """Set the position target of the 7 arm joints (panda_joint1..7 order).

        Raises ValueError for a wrong size or non-finite values (the previous target stays);
        targets beyond the URDF limits are clipped to them, as the real arm's limits would.
        """
        q = self._validated(q_target)
        q = np.clip(q, self.lower, self.upper)
        if self._cmd_time is not None and self.time > self._cmd_time:
            v = (q - self._q_cmd) / (self.time - self._cmd_time)
            self._v_ff = np.clip(v, -np.array(self.velocity_limit), self.velocity_limit)
        else:
            self._v_ff = np.zeros(7)
        self._q_cmd = q
        self._cmd_time = self.time
        self._apply_motors()

    @property
    def commanded(self) -> np.ndarray:
        return self._q_cmd.copy()

    def step(self, dt: float) -> ContactState:
        """Advance the simulation by `dt` seconds (rounded to whole physics steps)."""
        n = max(1, round(dt / self.config.timestep))
        pid = self.cid
        c = self.config
        touching: set[tuple[int, int]] = set()
        depth = 0.0
        force = 0.0
        for _ in range(n):
            # A command older than two command periods has no velocity to follow: hold it.
            if (
                self._cmd_time is not None
                and self.time - self._cmd_time > 0.05
                and self._v_ff.any()
            ):
                self._v_ff = np.zeros(7)
                self._apply_motors()
            p.stepSimulation(physicsClientId=pid)
            self._steps += 1
            self.time = self._steps * c.timestep
            for body in (self.obstacle, self.table, *self.bins):
                if body is None:
                    continue
                for pt in p.getContactPoints(self.robot, body, physicsClientId=pid):
                    d, f = -pt[8], pt[9]
                    if d > c.contact_depth or f > c.contact_force:
                        touching.add((pt[3], body))
                        depth = max(depth, d)
                        force = max(force, f)
        new = touching - self._touching
        self._touching = touching
        st = self.contacts
        st.in_contact = bool(touching)
        st.pairs = sorted(
            (self.link_names.get(link, str(link)), self._body_name(body)) for link, body in touching
        )
        st.new_events = len(new)
        st.events += len(new)
        st.max_depth = depth
        st.max_force = force
        return st

    # --- observations ---------------------------------------------------------------------------
    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) of all 9 joints in `joint_names` order (arm, then fingers)."""
        states = p.getJointStates(
            self.robot, self.arm_idx + self.finger_idx, physicsClientId=self.cid
        )
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def joint_state_full(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, velocities, motor torques) of all 9 joints in `joint_names` order."""
        states = p.getJointStates(
            self.robot, self.arm_idx + self.finger_idx, physicsClientId=self.cid
        )
        return (
            np.array([s[0] for s in states]),
            np.array([s[1] for s in states]),
            np.array([s[3] for s in states]),
        )

    def arm_state(self) -> tuple[np.ndarray, np.ndarray]:
        q, v = self.joint_state()
        return q[:7], v[:7]

    def tool_position(self) -> np.ndarray:
        """The tool point (panda_grasptarget) in the base frame, from the simulator's own FK."""
        state = p.getLinkState(
            self.robot, self.tool_link, computeForwardKinematics=True, physicsClientId=self.cid
        )
        return np.array(state[4])

    def render(self) -> np.ndarray:
        """The fixed camera's RGB image, uint8 [H, W, 3]."""
        c = self.config
        _, _, rgba, _, _ = p.getCameraImage(
            c.image_width,
            c.image_height,
            self._view,
            self._proj,
            renderer=p.ER_TINY_RENDERER,
            flags=p.ER_NO_SEGMENTATION_MASK,
            physicsClientId=self.cid,
        )
        img = np.asarray(rgba, dtype=np.uint8).reshape(c.image_height, c.image_width, 4)
        return np.ascontiguousarray(img[:, :, :3])

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(p.error):
                p.disconnect(physicsClientId=self.cid)
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> SimWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------
    def _validated(self, q: np.ndarray) -> np.ndarray:
        arr = np.asarray(q, dtype=np.float64).reshape(-1)
        if arr.shape != (7,):
            raise ValueError(f"expected 7 arm joint positions, got {arr.shape[0]}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("joint positions contain NaN or Inf")
        return arr

    def _apply_motors(self) -> None:
        c = self.config
        pid = self.cid
        p.setJointMotorControlArray(
            self.robot,
            self.arm_idx,
            p.POSITION_CONTROL,
            targetPositions=self._q_cmd.tolist(),
            targetVelocities=self._v_ff.tolist(),
            forces=self.effort,
            positionGains=[c.position_gain] * 7,
            velocityGains=[c.velocity_gain] * 7,
            physicsClientId=pid,
        )
        for j, target in zip(self.finger_idx, self._finger_cmd, strict=True):
            p.setJointMotorControl2(
                self.robot,
                j,
                p.POSITION_CONTROL,
                targetPosition=float(target),
                force=c.finger_force,
                maxVelocity=c.finger_speed,
                physicsClientId=pid,
            )

    def _body_name(self, body: int) -> str:
        if body == self.table:
            return "table"
        return f"bin_{self.bins[body]}" if body in self.bins else "obstacle"
