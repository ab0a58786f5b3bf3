"""TickKinematics (the safety filter's per-tick kernel) against RobotModel's own kinematics."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from diffusion_controller.control import panda
from diffusion_controller.control.robot_model import RobotModel


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_urdf(panda.panda_urdf_path())


def _check(model: RobotModel, q: np.ndarray) -> None:
    kin = model.tick_kinematics()
    kin.update(q)
    pos, jw, _ = model.kinematics(q)
    np.testing.assert_allclose(kin.pos, pos, atol=1e-12)
    np.testing.assert_allclose(kin.jw, jw, atol=1e-12)
    np.testing.assert_allclose(kin.jp[:-1], model.sphere_jacobians(q), atol=1e-12)
    np.testing.assert_array_equal(kin.jp[-1], 0.0)  # the fixed dummy point
    assert kin.manipulability() == pytest.approx(model.manipulability(q), rel=1e-9, abs=1e-15)


def test_matches_robot_model(model: RobotModel) -> None:
    rng = np.random.default_rng(7)
    lim = model.urdf_limits()
    for _ in range(20):
        _check(model, rng.uniform(lim.lower, lim.upper))


def test_callers_joint_order() -> None:
    rev = RobotModel.from_urdf(panda.panda_urdf_path(),
                               joint_names=list(reversed(panda.PANDA_JOINT_NAMES)))
    rng = np.random.default_rng(8)
    lim = rev.urdf_limits()
    for _ in range(5):
        _check(rev, rng.uniform(lim.lower, lim.upper))


def test_look_ahead_leaves_the_tick_arrays(model: RobotModel) -> None:
    kin = model.tick_kinematics()
    q = panda.PANDA_READY_Q + 0.1
    kin.update(q)
    pos, jw, jp = kin.pos.copy(), kin.jw.copy(), kin.jp.copy()
    ahead = q + 0.3
    assert kin.manipulability_at(ahead) == pytest.approx(model.manipulability(ahead), rel=1e-9)
    np.testing.assert_array_equal(kin.pos, pos)
    np.testing.assert_array_equal(kin.jw, jw)
    np.testing.assert_array_equal(kin.jp, jp)


def test_own_pinocchio_data(model: RobotModel) -> None:
    """Another thread computing FK on the shared RobotModel cannot change a tick's arrays."""
    kin = model.tick_kinematics()
    q = panda.PANDA_READY_Q - 0.2
    stop = threading.Event()

    def hammer() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            model.sphere_positions(panda.PANDA_READY_Q + rng.uniform(-1, 1, 7))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        for _ in range(200):
            kin.update(q)
            expected = kin.pos.copy()
            kin.update(q)
            np.testing.assert_array_equal(kin.pos, expected)
    finally:
        stop.set()
        worker.join()
    np.testing.assert_allclose(kin.pos, model.sphere_positions(q), atol=1e-12)
