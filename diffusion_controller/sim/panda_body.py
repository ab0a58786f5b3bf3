"""The Panda as a PyBullet body: its URDF loaded (low-poly visuals), its joints, limits, colours.

Kept apart from world.py so SimWorld holds the motors, the stepping, the contacts and the camera,
while what the arm itself is (which URDF is loaded and how it is drawn, which joint index is which,
the arm joints' URDF limits, the finger pads' friction) is read in one place.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

import pybullet as p

from diffusion_controller.control.panda import panda_urdf_path
from diffusion_controller.sim.kinematics import ARM_JOINTS, FINGER_JOINTS

ARM_RGBA = (0.92, 0.92, 0.92, 1.0)  # near white
HAND_RGBA = (0.25, 0.25, 0.3, 1.0)  # dark, so the tool end reads clearly against the table
_HAND_LINKS = {"panda_hand", "panda_leftfinger", "panda_rightfinger", "panda_link8"}


@dataclass
class PandaBody:
    """One loaded Panda on a physics client: body id, joint and link indices, URDF limits."""

    robot: int
    urdf_path: str  # the URDF as shipped (what /robot_description carries)
    urdf_text: str
    tmpdir: str | None  # holds the low-poly copy that was loaded; the world removes it on close
    index: dict[str, int]  # joint name -> joint index
    link_names: dict[int, str]  # link index -> name, -1 being the base
    arm_idx: list[int]  # panda_joint1..7
    finger_idx: list[int]  # panda_finger_joint1, 2
    lower: list[float]  # the arm joints' URDF limits, in arm_idx order
    upper: list[float]
    effort: list[float]
    velocity_limit: list[float]
    tool_link: int  # panda_grasptarget_hand


def load_panda(pid: int, low_poly_visuals: bool, finger_friction: float) -> PandaBody:
    """Load the Panda URDF fixed at the origin, joint damping off, fingers with pad friction."""
    urdf_path = panda_urdf_path()
    with open(urdf_path, encoding="utf-8") as fh:
        urdf_text = fh.read()
    tmpdir: str | None = None
    load_path = urdf_path
    if low_poly_visuals:
        tmpdir = tempfile.mkdtemp(prefix="dc_sim_")
        load_path = os.path.join(tmpdir, "panda_low_poly.urdf")
        with open(load_path, "w", encoding="utf-8") as fh:
            fh.write(_low_poly_urdf(urdf_text, os.path.dirname(urdf_path)))
    robot = p.loadURDF(
        load_path,
        [0.0, 0.0, 0.0],
        useFixedBase=True,
        flags=p.URDF_ENABLE_CACHED_GRAPHICS_SHAPES,
        physicsClientId=pid,
    )
    index: dict[str, int] = {}
    link_names: dict[int, str] = {-1: "panda_link0"}
    for j in range(p.getNumJoints(robot, physicsClientId=pid)):
        info = p.getJointInfo(robot, j, physicsClientId=pid)
        index[info[1].decode()] = j
        link_names[j] = info[12].decode()
    arm_idx = [index[n] for n in ARM_JOINTS]
    finger_idx = [index[n] for n in FINGER_JOINTS]
    infos = [p.getJointInfo(robot, j, physicsClientId=pid) for j in arm_idx]
    for link in range(-1, p.getNumJoints(robot, physicsClientId=pid)):
        # Joint damping off: the motors are the only source of joint torque, as on the real arm.
        p.changeDynamics(robot, link, jointDamping=0.0, physicsClientId=pid)
        if link in finger_idx:
            p.changeDynamics(robot, link, lateralFriction=finger_friction, physicsClientId=pid)
        rgba = HAND_RGBA if link_names[link] in _HAND_LINKS else ARM_RGBA
        p.changeVisualShape(robot, link, rgbaColor=rgba, physicsClientId=pid)
    return PandaBody(
        robot=robot,
        urdf_path=urdf_path,
        urdf_text=urdf_text,
        tmpdir=tmpdir,
        index=index,
        link_names=link_names,
        arm_idx=arm_idx,
        finger_idx=finger_idx,
        lower=[info[8] for info in infos],
        upper=[info[9] for info in infos],
        effort=[info[10] for info in infos],
        velocity_limit=[info[11] for info in infos],
        tool_link=index["panda_grasptarget_hand"],
    )


def _low_poly_urdf(text: str, urdf_dir: str) -> str:
    """The URDF with every visual mesh replaced by the same link's collision mesh.

    Mesh references become absolute so the copy can live in a temporary directory; kinematics,
    dynamics and collision geometry are untouched.
    """

    def visual(match: re.Match[str]) -> str:
        return match.group(0).replace("meshes/visual/", "meshes/collision/")

    text = re.sub(r"<visual>.*?</visual>", visual, text, flags=re.DOTALL)
    return text.replace("package://meshes/", os.path.join(urdf_dir, "meshes") + os.sep)
