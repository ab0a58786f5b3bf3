"""The Franka Emika Panda/FR3 with its hand as the settings' defaults describe it: joint names,
the link collision spheres and the self-collision pairs (the defaults of `joint_names`,
`collision_spheres` and `self_collision_pairs`; the core's control/panda.py re-exports them).

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

PANDA_JOINT_NAMES: list[str] = [f"panda_joint{i}" for i in range(1, 8)]

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
