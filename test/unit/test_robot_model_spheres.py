"""The default Panda spheres cover the collision meshes that pybullet ships, with 5 mm to spare."""

from __future__ import annotations

import os

import numpy as np
import pytest

from diffusion_controller.control import panda

MESH_OF = {f"panda_link{i}": f"link{i}.obj" for i in range(8)} | {
    "panda_hand": "hand.obj",
    "panda_leftfinger": "finger.obj",
    "panda_rightfinger": "finger.obj",
}


def _vertices(name: str) -> np.ndarray:
    path = os.path.join(os.path.dirname(panda.panda_urdf_path()), "meshes", "collision", name)
    if not os.path.isfile(path):
        pytest.skip(f"collision mesh {path} not installed")
    with open(path, encoding="utf-8") as fh:
        rows = [line.split()[1:4] for line in fh if line.startswith("v ")]
    return np.asarray(rows, dtype=np.float64)


@pytest.mark.parametrize("link", sorted(MESH_OF))
def test_spheres_cover_collision_mesh(link: str) -> None:
    verts = _vertices(MESH_OF[link])
    if link == "panda_rightfinger":  # collision origin rpy = (0, 0, pi)
        verts = verts * [-1.0, -1.0, 1.0]
    if "finger" in link:  # locked at mid-travel: cover the whole +-2 cm of travel
        axis = np.array([0.0, 1.0, 0.0]) if link == "panda_leftfinger" else np.array([0, -1.0, 0])
        verts = np.concatenate([verts + s * axis for s in np.linspace(-0.02, 0.02, 9)])
    spheres = np.asarray(panda.PANDA_SPHERES[link])
    dist = np.linalg.norm(verts[:, None, :] - spheres[None, :, :3], axis=2)
    depth = np.max(spheres[None, :, 3] - dist, axis=1)  # how deep inside its best sphere
    assert depth.min() >= 0.005 - 1e-9


def test_self_collision_defaults_are_apart_at_ready() -> None:
    from diffusion_controller.control.robot_model import RobotModel

    robot = RobotModel.from_urdf(panda.panda_urdf_path())
    pos = robot.sphere_positions(panda.PANDA_READY_Q)
    groups = np.array(robot.sphere_groups)
    for a, b in panda.PANDA_SELF_COLLISION_PAIRS:
        ia, ib = np.flatnonzero(groups == a), np.flatnonzero(groups == b)
        d = np.linalg.norm(pos[ia][:, None] - pos[ib][None], axis=2)
        gap = d - robot.sphere_radii[ia][:, None] - robot.sphere_radii[ib][None]
        assert gap.min() > 0.05, (a, b)
