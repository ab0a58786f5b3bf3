"""pick_place in PyBullet: geometry, the hand's grasp under lift, success and failure labels, the
scripted demonstrator on a few seeds, and the blind (mean cube) baseline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diffusion_controller.sim.kinematics import panda_kinematics
from diffusion_controller.sim.pick_demonstrator import coin_bin, plan_pick_place
from diffusion_controller.sim.pick_place import (
    CUBE_X,
    CUBE_Y,
    PickPlaceMonitor,
    PickPlaceSpec,
    mean_cube,
    sample_pick_place,
)
from diffusion_controller.sim.rollout import rollout
from diffusion_controller.sim.tasks import get_task, spec_from_json, task_of
from diffusion_controller.sim.world import SimWorld


@pytest.fixture(scope="module")
def world() -> SimWorld:
    w = SimWorld()
    yield w
    w.close()


def test_geometry_patch_bins_and_json_round_trip() -> None:
    specs = [sample_pick_place(s) for s in range(200)]
    cubes = np.array([s.cube for s in specs])
    assert CUBE_X[1] - CUBE_X[0] >= 0.24 and CUBE_Y[1] - CUBE_Y[0] >= 0.24
    assert cubes[:, 0].min() >= CUBE_X[0] and cubes[:, 0].max() <= CUBE_X[1]
    assert cubes[:, 1].min() >= CUBE_Y[0] and cubes[:, 1].max() <= CUBE_Y[1]
    assert np.ptp(cubes[:, 0]) > 0.2 and np.ptp(cubes[:, 1]) > 0.2  # spread over the patch
    spec = specs[0]
    left, right = spec.bin_named("left"), spec.bin_named("right")
    assert left.x == right.x and left.y == -right.y > 0  # mirror images about the x axis
    mid = np.array([left.x, 0.0, spec.cube_size / 2])
    assert spec.bin_containing(mid) is None  # the two modes' average is not a bin
    for b in spec.bins:  # no cube starts inside or under a bin's walls
        gap = abs(cubes[:, 1] - b.y).min() - spec.cube_size / 2
        assert gap > b.inner_half + b.wall_thickness
    back = spec_from_json(spec.to_json())
    assert isinstance(back, PickPlaceSpec) and back.seed == spec.seed
    np.testing.assert_allclose(back.cube, spec.cube)
    assert task_of(back).name == "pick_place"
    with pytest.raises(ValueError):
        spec_from_json('{"task": "juggle"}')
    # Same seed, same task; the start pose is the hand-down IK solution.
    np.testing.assert_allclose(sample_pick_place(7).cube, sample_pick_place(7).cube)
    np.testing.assert_allclose(
        panda_kinematics().tool_position(spec.start_q), spec.start_tool, atol=1e-6
    )


def test_camera_sees_cube_and_bins(world: SimWorld) -> None:
    spec = sample_pick_place(3)
    world.reset(spec)
    img = world.render().astype(int)
    assert img.shape == (96, 96, 3)
    red = (img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)
    yellow = (img[..., 0] > 150) & (img[..., 1] > 120) & (img[..., 2] < 60)
    assert red.sum() >= 4  # the cube is a few pixels wide at 96x96
    cols = np.nonzero(yellow.any(axis=0))[0]
    assert yellow.sum() >= 40 and cols.min() < 48 < cols.max()  # both bins, either side


def _grasp(world: SimWorld, spec: PickPlaceSpec, *, close: float = 0.0) -> np.ndarray:
    """Open-loop: down onto the cube, close, lift 15 cm. Returns the arm's last command."""
    kin = panda_kinematics()
    q = spec.start_q.copy()

    def go(goal: np.ndarray, steps: int) -> None:
        nonlocal q
        p0 = world.tool_position()
        for k in range(1, steps + 1):
            q, _ = kin.ik(p0 + (goal - p0) * k / steps, q, rest=spec.start_q, min_iters=2)
            world.command(q)
            world.step(0.01)

    go(spec.cube + np.array([0.0, 0.0, 0.1]), 150)
    go(spec.cube + np.array([0.0, 0.0, 0.002]), 120)
    for _ in range(100):
        world.command_gripper([close, close])
        world.step(0.01)
    go(spec.cube + np.array([0.0, 0.0, 0.15]), 150)
    return q


def test_grasp_holds_the_cube_under_lift_with_bounded_force(world: SimWorld) -> None:
    spec = sample_pick_place(11)
    world.reset(spec)
    assert world.fingers_touching_cube() == 0
    q = _grasp(world, spec)
    pos, _ = world.cube_state()
    assert pos[2] > spec.cube[2] + 0.12  # lifted with the hand
    assert world.fingers_touching_cube() == 2
    fingers = world.joint_state()[0][7:]
    # The fingers stopped on the cube (each at half its width), not at their closed target.
    np.testing.assert_allclose(fingers, spec.cube_size / 2, atol=0.003)
    torques = np.abs(world.joint_state_full()[2][7:])
    assert torques.max() <= world.config.finger_force + 1e-6
    for _ in range(100):  # held while the arm stays up
        world.command(q)
        world.step(0.01)
    assert world.cube_state()[0][2] > spec.cube[2] + 0.12
    assert world.contacts.events == 0  # nothing but the cube was touched


def test_labels_success_in_a_bin_and_dropped_on_the_table(world: SimWorld) -> None:
    spec = sample_pick_place(4)
    # Success: carry to above the right bin and open.
    plan = plan_pick_place(spec, side="right")
    out = rollout(world, spec, plan.command_at, gripper_at=plan.gripper_at)
    assert out.success and out.label == "success" and out.side == "right"
    # Dropped: grasp and lift, then open the hand with the cube over the table.
    world.reset(spec)
    monitor = PickPlaceMonitor(spec, world)
    q = _grasp(world, spec, close=0.0)
    t = world.time
    for k in range(200):
        world.command(q)
        world.command_gripper([0.0, 0.0] if k < 20 else [0.04, 0.04])
        world.step(0.01)
        monitor.update(t + 0.01 * k, world.tool_position(), world.contacts.new_events)
        if monitor.done:
            break
    assert monitor.done and not monitor.success
    assert monitor.label == "wrong_place"  # released on purpose, outside a bin
    assert monitor.outcome().side == "none"


def test_cube_slipping_from_a_weak_grip_is_dropped(world: SimWorld) -> None:
    """A hand commanded to stay closed that loses the cube has dropped it."""
    spec = sample_pick_place(4)
    world.reset(spec)
    monitor = PickPlaceMonitor(spec, world)
    q = _grasp(world, spec)
    base = world.config.finger_force
    try:
        world.config.finger_force = 0.05  # too weak to hold 100 g: it slips out
        world.command_gripper([0.0, 0.0])
        for k in range(300):
            world.command(q)
            world.step(0.01)
            if monitor.update(0.01 * k, world.tool_position(), world.contacts.new_events):
                break
    finally:
        world.config.finger_force = base
    assert monitor.label == "dropped"


def test_missed_grasp_and_collision_labels(world: SimWorld) -> None:
    spec = sample_pick_place(9)
    short = dataclasses.replace(spec, timeout=1.0)
    out = rollout(world, short, lambda t: short.start_q)  # never moves: never lifted
    assert out.label == "missed_grasp" and out.timed_out
    # Pressing the hand into a bin wall is a collision.
    kin = panda_kinematics()
    b = spec.bin_named("left")
    wall = np.array([b.x, b.y - b.inner_half - b.wall_thickness / 2, 0.02])
    path = [kin.ik(spec.start_tool + (wall - spec.start_tool) * s, spec.start_q)[0]
            for s in np.linspace(0, 1, 300)]  # fmt: skip
    out = rollout(world, spec, lambda t: path[min(int(t / 0.01), len(path) - 1)], max_time=4.0)
    assert out.label == "collision" and out.collided


def test_demonstrator_succeeds_and_picks_both_bins(world: SimWorld) -> None:
    task = get_task("pick_place")
    sides = set()
    for seed in range(6):
        spec = task.sample(seed)
        plan = task.plan(spec)
        assert plan.side == coin_bin(seed)
        out = rollout(world, spec, plan.command_at, gripper_at=plan.gripper_at,
                      min_time=plan.duration)  # fmt: skip
        assert out.success, (seed, out)
        assert out.side == plan.side and out.collisions == 0
        sides.add(out.side)
    assert sides == {"left", "right"}


@pytest.mark.slow
def test_blind_demonstrator_mostly_fails(world: SimWorld) -> None:
    """Aimed at the mean cube position, the same demonstrator succeeds on few seeds (< 20 %)."""
    wins = 0
    seeds = range(500, 520)
    for seed in seeds:
        spec = sample_pick_place(seed)
        plan = plan_pick_place(spec, cube=mean_cube())
        out = rollout(world, spec, plan.command_at, gripper_at=plan.gripper_at)
        wins += out.success
    assert wins / len(seeds) < 0.2
