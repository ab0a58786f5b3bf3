"""Franka Emika Panda defaults: joint names, datasheet limits, collision spheres, a ready pose.

The joint names, collision spheres and self-collision pairs are the settings' defaults, so they are
written in diffusion_controller/settings/panda.py (with how the spheres were fitted) and re-exported
here for the core.
"""

from __future__ import annotations

import os

import numpy as np

from diffusion_controller.settings.panda import (  # noqa: F401 (re-exported)
    PANDA_EE_FRAME,
    PANDA_JOINT_NAMES,
    PANDA_SELF_COLLISION_PAIRS,
    PANDA_SPHERES,
    SphereSpec,
)

PANDA_FINGER_JOINTS: list[str] = ["panda_finger_joint1", "panda_finger_joint2"]

# Franka Emika, "Robot and interface specifications" (frankaemika.github.io/docs/
# control_parameters.html, limits for Panda in joint space): maximum joint acceleration and jerk.
PANDA_ACCELERATION = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])  # rad/s^2
PANDA_JERK = np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0])  # rad/s^3

# The usual "ready" configuration: elbow up, hand pointing down, well inside every limit.
PANDA_READY_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])


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
