"""Franka Emika Panda defaults: joint names, datasheet limits, collision spheres, a ready pose.

The sphere sets are for the Panda URDF that pybullet ships (`pybullet_data/franka_panda/panda.urdf`,
whose collision meshes are in the link frames). They were fitted offline to points sampled on the
collision meshes' triangles (a minimax cover per link), then every radius was grown by 5 mm and
rounded up to the millimetre, so every point of every collision mesh lies at least 5 mm inside a
sphere of its link (test/unit/test_robot_model_spheres.py re-checks this against the meshes).

The finger spheres cover the finger over its whole travel: the model locks the finger joints at
mid-travel (0.02 m) by default, and each finger sphere covers the finger shifted by +-0.02 m along
its joint axis, so an open or a closed gripper is inside it.
"""

from __future__ import annotations

import os

import numpy as np

PANDA_JOINT_NAMES: list[str] = [f"panda_joint{i}" for i in range(1, 8)]
PANDA_FINGER_JOINTS: list[str] = ["panda_finger_joint1", "panda_finger_joint2"]

# Franka Emika, "Robot and interface specifications" (frankaemika.github.io/docs/
# control_parameters.html, limits for Panda in joint space): maximum joint acceleration and jerk.
PANDA_ACCELERATION = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])  # rad/s^2
PANDA_JERK = np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0])  # rad/s^3

# The usual "ready" configuration: elbow up, hand pointing down, well inside every limit.
PANDA_READY_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])

SphereSpec = tuple[float, float, float, float]  # (x, y, z, radius) in the link frame, metres

PANDA_SPHERES: dict[str, list[SphereSpec]] = {
    "panda_link0": [
        (-0.074, -0.002, 0.015, 0.099),
        (-0.002, -0.003, 0.068, 0.098),
        (-0.001, 0.000, 0.000, 0.100),
    ],
    "panda_link1": [(0.002, -0.007, -0.128, 0.095), (-0.001, -0.049, -0.020, 0.095)],
    "panda_link2": [(-0.001, -0.131, 0.008, 0.095), (-0.001, -0.021, 0.048, 0.096)],
    "panda_link3": [(0.010, 0.004, -0.072, 0.088), (0.072, 0.039, -0.011, 0.087)],
    "panda_link4": [(-0.009, 0.009, 0.037, 0.088), (-0.073, 0.075, 0.005, 0.088)],
    "panda_link5": [
        (0.001, 0.016, -0.217, 0.088),
        (-0.001, 0.040, -0.119, 0.088),
        (0.002, 0.058, -0.019, 0.089),
    ],
    "panda_link6": [(0.087, 0.011, 0.000, 0.082), (0.022, -0.007, 0.001, 0.081)],
    "panda_link7": [(0.032, 0.032, 0.077, 0.057), (-0.003, -0.003, 0.074, 0.057)],
    "panda_hand": [
        (0.000, 0.055, 0.032, 0.059),
        (0.000, -0.064, 0.022, 0.059),
        (0.002, -0.008, 0.020, 0.059),
    ],
    # The right finger's collision mesh is the left one turned by pi about z.
    "panda_leftfinger": [(0.000, 0.014, 0.027, 0.049)],
    "panda_rightfinger": [(0.000, -0.014, 0.027, 0.049)],
}

# Sphere groups that can meet when the arm folds back on itself: the wrist and hand against the
# base and the first two links. Neighbouring links overlap by construction and are not paired.
PANDA_SELF_COLLISION_PAIRS: list[tuple[str, str]] = [
    (a, b)
    for a in ("panda_link6", "panda_link7", "panda_hand", "panda_leftfinger", "panda_rightfinger")
    for b in ("panda_link0", "panda_link1", "panda_link2")
]

PANDA_EE_FRAME = "panda_hand"


def panda_urdf_path() -> str:
    """Path of the Panda URDF shipped with pybullet (pybullet_data), for tests, sim and benches:
    the one place that knows where it is. FileNotFoundError when pybullet_data or the file is
    missing."""
    try:
        import pybullet_data
    except ImportError as exc:  # the control core does not need pybullet on the robot
        raise FileNotFoundError(
            "pybullet_data is not installed: pass the Panda URDF path or XML explicitly"
        ) from exc
    path = os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Panda URDF not found at {path}")
    return path
