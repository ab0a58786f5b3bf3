"""RobotModel against pybullet's own kinematics of the same URDF, and its error handling."""

from __future__ import annotations

import numpy as np
import pinocchio as pin
import pytest

from diffusion_controller.control import panda
from diffusion_controller.control.robot_model import RobotModel

pybullet = pytest.importorskip("pybullet", reason="pybullet is the FK reference")

LINKS = ["panda_link1", "panda_link3", "panda_link5", "panda_link7", "panda_hand",
         "panda_leftfinger", "panda_rightfinger", "panda_grasptarget"]


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_urdf(panda.panda_urdf_path())


@pytest.fixture(scope="module")
def bullet():
    cid = pybullet.connect(pybullet.DIRECT)
    body = pybullet.loadURDF(panda.panda_urdf_path(), useFixedBase=True, physicsClientId=cid)
    joints, links = {}, {}
    for i in range(pybullet.getNumJoints(body, physicsClientId=cid)):
        info = pybullet.getJointInfo(body, i, physicsClientId=cid)
        joints[info[1].decode()] = i
        links[info[12].decode()] = i
    yield cid, body, joints, links
    pybullet.disconnect(cid)


def _bullet_pose(bullet, values: dict[str, float], link: str) -> tuple[np.ndarray, np.ndarray]:
    cid, body, joints, links = bullet
    for name, value in values.items():
        pybullet.resetJointState(body, joints[name], value, physicsClientId=cid)
    state = pybullet.getLinkState(body, links[link], computeForwardKinematics=True,
                                  physicsClientId=cid)
    rot = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
    return np.array(state[4]), rot


def test_forward_kinematics_matches_pybullet(model: RobotModel, bullet) -> None:
    rng = np.random.default_rng(1)
    lim = model.urdf_limits()
    for _ in range(20):
        q = rng.uniform(lim.lower, lim.upper)
        values = dict(zip(model.joint_names, q, strict=True)) | model.locked
        for link in LINKS:
            pos, rot = _bullet_pose(bullet, values, link)
            pose = model.frame_pose(q, link)
            np.testing.assert_allclose(pose[:3, 3], pos, atol=1e-6)
            np.testing.assert_allclose(pose[:3, :3], rot, atol=1e-6)


def test_locked_fingers(model: RobotModel, bullet) -> None:
    assert model.nq == 7
    assert model.joint_names == panda.PANDA_JOINT_NAMES
    assert model.locked == pytest.approx({"panda_finger_joint1": 0.02,
                                          "panda_finger_joint2": 0.02})
    closed = RobotModel.from_urdf(
        panda.panda_urdf_path(), locked={"panda_finger_joint1": 0.0, "panda_finger_joint2": 0.0}
    )
    q = panda.PANDA_READY_Q
    values = dict(zip(closed.joint_names, q, strict=True)) | closed.locked
    pos, _ = _bullet_pose(bullet, values, "panda_leftfinger")
    np.testing.assert_allclose(closed.frame_pose(q, "panda_leftfinger")[:3, 3], pos, atol=1e-6)
    # the mid-travel lock puts the finger 2 cm further along its axis
    gap = model.frame_pose(q, "panda_leftfinger")[:3, 3] - pos
    assert np.linalg.norm(gap) == pytest.approx(0.02, abs=1e-9)


def test_sphere_jacobians_match_finite_differences(model: RobotModel) -> None:
    rng = np.random.default_rng(2)
    lim = model.urdf_limits()
    eps = 1e-6
    for _ in range(5):
        q = rng.uniform(lim.lower + 0.01, lim.upper - 0.01)
        jac = model.sphere_jacobians(q)
        assert jac.shape == (len(model.sphere_radii), 3, 7)
        num = np.empty_like(jac)
        for j in range(7):
            dq = np.zeros(7)
            dq[j] = eps
            num[:, :, j] = (model.sphere_positions(q + dq) - model.sphere_positions(q - dq)) / (
                2 * eps)
        np.testing.assert_allclose(jac, num, atol=1e-7)


def test_end_effector_jacobian_and_manipulability(model: RobotModel) -> None:
    q = panda.PANDA_READY_Q + 0.1
    fid = model.model.getFrameId("panda_hand")
    pin.computeJointJacobians(model.model, model.data, q)
    pin.updateFramePlacements(model.model, model.data)
    ref = pin.getFrameJacobian(model.model, model.data, fid, pin.LOCAL_WORLD_ALIGNED)
    np.testing.assert_allclose(model.ee_jacobian(q), ref, atol=1e-10)
    w = np.sqrt(np.linalg.det(ref @ ref.T))
    assert model.manipulability(q) == pytest.approx(w, rel=1e-9)
    sv = np.linalg.svd(ref, compute_uv=False)
    assert model.condition_number(q) == pytest.approx(sv[0] / sv[-1], rel=1e-9)
    np.testing.assert_allclose(model.ee_position(q), model.frame_pose(q, "panda_hand")[:3, 3])


def test_sphere_sets(model: RobotModel) -> None:
    counts = {link: model.sphere_groups.count(link) for link in panda.PANDA_SPHERES}
    assert counts == {link: len(s) for link, s in panda.PANDA_SPHERES.items()}
    assert len(model.sphere_radii) == 25
    # link0 is the fixed base: its spheres never move, every other sphere does
    assert model.moving.sum() == 22
    assert not model.moving[[g == "panda_link0" for g in model.sphere_groups]].any()
    custom = RobotModel.from_urdf(panda.panda_urdf_path(),
                                  spheres={"panda_hand": [(0.0, 0.0, 0.05, 0.1)]})
    p = custom.sphere_positions(panda.PANDA_READY_Q)
    np.testing.assert_allclose(
        p[0], (custom.frame_pose(panda.PANDA_READY_Q, "panda_hand") @ [0, 0, 0.05, 1])[:3])


def test_joint_order_is_the_callers(model: RobotModel) -> None:
    names = list(reversed(panda.PANDA_JOINT_NAMES))
    rev = RobotModel.from_urdf(panda.panda_urdf_path(), joint_names=names)
    q = panda.PANDA_READY_Q + 0.2
    np.testing.assert_allclose(rev.sphere_positions(q[::-1]), model.sphere_positions(q))
    np.testing.assert_allclose(rev.sphere_jacobians(q[::-1]), model.sphere_jacobians(q)[:, :, ::-1])
    np.testing.assert_allclose(rev.urdf_limits().upper, model.urdf_limits().upper[::-1])
    np.testing.assert_allclose(rev.lever, model.lever[:, ::-1])


def test_second_order_bounds_hold(model: RobotModel) -> None:
    """|J columns| <= lever arms, and |p(q+d) - p(q) - J d| <= 1/2 d' C d (what the filter's
    linearisation margin relies on)."""
    rng = np.random.default_rng(3)
    lim = model.urdf_limits()
    for _ in range(30):
        q = rng.uniform(lim.lower, lim.upper)
        d = rng.normal(0, 0.2, 7)
        p0 = model.sphere_positions(q)
        jac = model.sphere_jacobians(q)
        assert np.all(np.linalg.norm(jac, axis=1) <= model.lever + 1e-9)
        err = np.linalg.norm(model.sphere_positions(q + d) - p0 - jac @ d, axis=1)
        bound = 0.5 * np.einsum("sij,i,j->s", model.curvature, np.abs(d), np.abs(d))
        assert np.all(err <= bound + 1e-12)


def test_limits(model: RobotModel) -> None:
    lim = model.urdf_limits()
    assert lim.names == panda.PANDA_JOINT_NAMES
    np.testing.assert_allclose(lim.upper[3], 0.0)
    np.testing.assert_allclose(lim.velocity, [2.175] * 4 + [2.61] * 3)
    np.testing.assert_allclose(lim.acceleration, panda.PANDA_ACCELERATION)
    np.testing.assert_allclose(lim.jerk, panda.PANDA_JERK)
    explicit = model.urdf_limits(acceleration=[1.0] * 7, jerk=[2.0] * 7)
    np.testing.assert_allclose(explicit.acceleration, 1.0)
    with pytest.raises(ValueError, match="acceleration"):
        model.urdf_limits(acceleration=[1.0] * 6)


def _two_link_urdf(extra: str = "") -> str:
    return f"""<?xml version="1.0"?>
<robot name="two">
  <link name="base"/><link name="l1"/><link name="l2"/>
  <joint name="a" type="revolute"><parent link="base"/><child link="l1"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" velocity="2" effort="1" {extra}/></joint>
  <joint name="b" type="revolute"><parent link="l1"/><child link="l2"/>
    <origin xyz="0.3 0 0"/><axis xyz="0 1 0"/>
    <limit lower="-2" upper="2" velocity="3" effort="1" {extra}/></joint>
</robot>"""


def test_non_panda_urdf_from_xml() -> None:
    with pytest.warns(UserWarning, match="no collision spheres"):
        robot = RobotModel.from_urdf(_two_link_urdf())
    assert robot.joint_names == ["a", "b"]
    with pytest.raises(ValueError, match="no acceleration limit for joint 'a'"):
        robot.urdf_limits()
    with_acc = RobotModel.from_urdf(_two_link_urdf('acceleration="4" jerk="40"'), spheres={})
    lim = with_acc.urdf_limits()
    np.testing.assert_allclose(lim.acceleration, [4.0, 4.0])
    np.testing.assert_allclose(lim.jerk, [40.0, 40.0])
    np.testing.assert_allclose(lim.velocity, [2.0, 3.0])


def test_errors() -> None:
    path = panda.panda_urdf_path()
    with pytest.raises(ValueError, match=r"unknown joints \['panda_joint9'\]"):
        RobotModel.from_urdf(path, joint_names=["panda_joint1", "panda_joint9"])
    with pytest.raises(ValueError, match="fixed joints"):
        RobotModel.from_urdf(path, joint_names=["panda_joint1", "panda_hand_joint"])
    with pytest.raises(ValueError, match="duplicate"):
        RobotModel.from_urdf(path, joint_names=["panda_joint1", "panda_joint1"])
    with pytest.raises(ValueError, match="cannot lock"):
        RobotModel.from_urdf(path, locked={"nope": 0.0})
    with pytest.raises(ValueError, match="both controlled and locked"):
        RobotModel.from_urdf(path, locked={"panda_joint1": 0.0})
    with pytest.raises(ValueError, match="outside"):
        RobotModel.from_urdf(path, locked={"panda_finger_joint1": 0.5})
    with pytest.raises(ValueError, match="not a frame"):
        RobotModel.from_urdf(path, spheres={"no_link": [(0, 0, 0, 0.1)]})
    with pytest.raises(ValueError, match="r>0"):
        RobotModel.from_urdf(path, spheres={"panda_hand": [(0, 0, 0, -0.1)]})
    with pytest.raises(ValueError, match="neither XML nor an existing file"):
        RobotModel.from_urdf("/no/such/file.urdf")
    with pytest.raises(ValueError, match="not valid XML"):
        RobotModel.from_urdf("<robot><link></robot>")
    model = RobotModel.from_urdf(path)
    with pytest.raises(ValueError, match="6 values for 7"):
        model.sphere_positions(np.zeros(6))
    with pytest.raises(ValueError, match="not finite"):
        model.sphere_positions(np.full(7, np.nan))
    with pytest.raises(ValueError, match="unknown frame"):
        model.frame_pose(np.zeros(7), "nowhere")
