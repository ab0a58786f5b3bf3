"""SimWorld physics: tracking, contacts counted from physics, clearance queries, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.sim.kinematics import FINGER_JOINTS, panda_kinematics
from diffusion_controller.sim.task import sample_task
from diffusion_controller.sim.world import SimWorld, WorldConfig


@pytest.fixture(scope="module")
def world():
    w = SimWorld(WorldConfig(image_width=64, image_height=48))
    yield w
    w.close()


def _drive(world: SimWorld, q_goal: np.ndarray, seconds: float) -> int:
    """Min-jerk joint motion from the current command to q_goal at 100 Hz; returns new events."""
    q0 = world.commanded
    events = 0
    n = round(seconds / 0.01)
    for k in range(1, n + 1):
        s = k / n
        world.command(q0 + (q_goal - q0) * (10 * s**3 - 15 * s**4 + 6 * s**5))
        events += world.step(0.01).new_events
    return events


def test_start_is_at_rest_and_clear(world: SimWorld) -> None:
    spec = sample_task(0)
    world.reset(spec)
    q, v = world.joint_state()
    assert q.shape == (9,) and world.joint_names[7:] == list(FINGER_JOINTS)
    np.testing.assert_allclose(q[:7], spec.start_q, atol=1e-9)
    np.testing.assert_allclose(world.tool_position(), spec.start_tool, atol=1e-4)
    for _ in range(50):  # holding still under gravity: no drift, no contact
        st = world.step(0.01)
        assert not st.in_contact
    q, v = world.arm_state()
    assert np.abs(q - spec.start_q).max() < 2e-3 and np.abs(v).max() < 1e-2
    assert world.min_clearance() > 0.05
    assert world.time == pytest.approx(0.5)


def test_driving_into_the_obstacle_is_a_counted_collision(world: SimWorld) -> None:
    spec = sample_task(1)
    world.reset(spec)
    kin = panda_kinematics()
    # Straight at the obstacle's axis, at passage height: through the obstacle.
    goal = np.array([spec.obstacle.x, spec.obstacle.y, 0.12])
    q_goal, _ = kin.ik(goal, spec.start_q, rest=spec.start_q)
    events = _drive(world, q_goal, 1.5)
    assert events >= 1
    assert world.contacts.events == events
    assert world.contacts.in_contact
    assert any(obj == "obstacle" for _, obj in world.contacts.pairs)
    assert world.min_clearance() < 0.0  # penetrating, as physics reports it
    # The obstacle is fixed: the arm is stopped short of its goal.
    assert np.linalg.norm(world.tool_position()[:2] - goal[:2]) > spec.obstacle.radius


def test_pressing_into_the_table_is_a_collision(world: SimWorld) -> None:
    spec = sample_task(2)
    world.reset(spec)
    kin = panda_kinematics()
    # Far to the side of the obstacle, then down through the table top.
    side = spec.start_tool + np.array([0.0, 0.25, 0.0])
    q_side, _ = kin.ik(side, spec.start_q, rest=spec.start_q)
    assert _drive(world, q_side, 1.0) == 0
    q_down, _ = kin.ik(side - np.array([0.0, 0.0, 0.2]), q_side, rest=q_side)
    assert _drive(world, q_down, 1.0) >= 1
    assert any(obj == "table" for _, obj in world.contacts.pairs)
    # reset clears the counters.
    world.reset(spec)
    assert world.contacts.events == 0 and not world.contacts.in_contact


def test_tracks_a_smooth_command_closely(world: SimWorld) -> None:
    spec = sample_task(3)
    world.reset(spec)
    kin = panda_kinematics()
    q_goal, _ = kin.ik(spec.start_tool + np.array([0.0, -0.2, 0.05]), spec.start_q)
    q0 = spec.start_q.copy()
    worst = 0.0
    for k in range(1, 101):
        s = k / 100
        q_cmd = q0 + (q_goal - q0) * (10 * s**3 - 15 * s**4 + 6 * s**5)
        world.command(q_cmd)
        world.step(0.01)
        worst = max(worst, float(np.abs(world.arm_state()[0] - q_cmd).max()))
    for _ in range(30):
        world.step(0.01)
    assert worst < 0.02
    assert np.abs(world.arm_state()[0] - q_goal).max() < 1e-3


def test_bad_commands_are_rejected_and_out_of_range_clipped(world: SimWorld) -> None:
    spec = sample_task(4)
    world.reset(spec)
    before = world.commanded
    for bad in (np.zeros(6), np.full(7, np.nan), np.r_[np.zeros(6), np.inf]):
        with pytest.raises(ValueError):
            world.command(bad)
        np.testing.assert_array_equal(world.commanded, before)
    world.command(np.full(7, 100.0))
    assert np.all(world.commanded <= np.array(world.upper))


def test_clearance_query_restores_the_state(world: SimWorld) -> None:
    spec = sample_task(5)
    world.reset(spec)
    for _ in range(10):
        world.step(0.01)
    q_before, v_before = world.joint_state()
    kin = panda_kinematics()
    q_hit, _ = kin.ik(np.array([spec.obstacle.x, spec.obstacle.y, 0.12]), spec.start_q)
    clear = world.clearance_along(np.stack([spec.start_q, q_hit]))
    assert clear.shape == (2, 2)
    assert clear[0, 0] > 0.05 and clear[1, 0] < 0.0
    q_after, v_after = world.joint_state()
    np.testing.assert_array_equal(q_after, q_before)
    np.testing.assert_array_equal(v_after, v_before)


def test_camera_sees_target_and_obstacle_colours(world: SimWorld) -> None:
    spec = sample_task(6)
    world.reset(spec)
    img = world.render()
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    r, g, b = (img[..., i].astype(int) for i in range(3))
    red = (r > 150) & (g < 80) & (b < 80)
    green = (g > 120) & (r < 80) & (b < 80)
    assert red.sum() >= 4 and green.sum() >= 1
    # Left/right is visible: the robot's left (+y) is the image's right.
    w = SimWorld(WorldConfig(image_width=96, image_height=96))
    try:
        w.reset(spec)
        kin = panda_kinematics()
        cols = []
        for dy in (0.25, -0.25):
            q, _ = kin.ik(spec.start_tool + np.array([0.05, dy, 0.0]), spec.start_q)
            w.set_joint_state(q)
            dark = (w.render().astype(int).sum(axis=2) < 200).nonzero()  # the dark hand
            cols.append(float(np.mean(dark[1])))
        assert cols[0] > cols[1] + 10
    finally:
        w.close()


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError):
        SimWorld(WorldConfig(timestep=0.05))
    with pytest.raises(ValueError):
        SimWorld(WorldConfig(image_width=4))
