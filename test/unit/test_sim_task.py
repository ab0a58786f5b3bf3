"""The two-way-round task: sampling, geometry helpers, serialisation and the success judge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_controller.sim.kinematics import panda_kinematics
from diffusion_controller.sim.task import Obstacle, TaskMonitor, TaskSpec, sample_task


def _spec(**kw) -> TaskSpec:
    base = dict(
        seed=0,
        target=np.array([0.72, 0.0, 0.0]),
        obstacle=Obstacle(x=0.47, y=0.0, radius=0.035, height=0.25),
        start_q=np.zeros(7),
        start_tool=np.array([0.33, 0.0, 0.13]),
    )
    base.update(kw)
    return TaskSpec(**base)


def test_same_seed_same_task_and_seeds_differ() -> None:
    a, b = sample_task(7), sample_task(7)
    assert a.to_json() == b.to_json()
    others = {sample_task(s).to_json() for s in range(5)}
    assert len(others) == 5


@pytest.mark.parametrize("seed", range(6))
def test_sampled_geometry_is_within_the_documented_ranges(seed: int) -> None:
    spec = sample_task(seed)
    kin = panda_kinematics()
    np.testing.assert_allclose(kin.tool_position(spec.start_q), spec.start_tool, atol=1e-4)
    assert np.all(spec.start_q > kin.lower + 0.1) and np.all(spec.start_q < kin.upper - 0.1)
    assert spec.target[2] == 0.0 and -0.04 <= spec.target[1] <= 0.04
    ob = spec.obstacle
    assert 0.03 <= ob.radius <= 0.038 and 0.23 <= ob.height <= 0.26
    # The obstacle sits on the start-to-target line, between the two.
    fwd, left = spec.axis()
    rel = np.array([ob.x, ob.y]) - spec.start_tool[:2]
    assert abs(rel @ left) < 1e-9
    along = rel @ fwd
    total = (spec.target[:2] - spec.start_tool[:2]) @ fwd
    assert 0.14 <= along <= 0.155 and 0.24 <= total - along <= 0.26
    # The target is reachable with the hand pointing down.
    _, err = kin.ik(spec.target + np.array([0, 0, 0.045]), spec.start_q)
    assert err < 1e-4


def test_json_round_trip_and_bad_payloads() -> None:
    spec = sample_task(3)
    back = TaskSpec.from_json(spec.to_json())
    assert back.to_json() == spec.to_json()
    with pytest.raises(ValueError, match="not JSON"):
        TaskSpec.from_json("{nope")
    with pytest.raises(ValueError, match="malformed"):
        TaskSpec.from_json('{"seed": 1}')
    bad = spec.to_dict()
    bad["target"] = [float("nan"), 0.0, 0.0]
    with pytest.raises(ValueError, match="non-finite"):
        TaskSpec.from_dict(bad)
    bad = spec.to_dict()
    bad["version"] = 99
    with pytest.raises(ValueError, match="version"):
        TaskSpec.from_dict(bad)


@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_obstacle_spheres_cover_the_obstacle(margin: float) -> None:
    spec = sample_task(11)
    ob = spec.obstacle
    spheres = spec.obstacle_spheres(margin=margin)
    centres = np.array([s.center for s in spheres])
    radii = np.array([s.radius for s in spheres])
    rng = np.random.default_rng(0)
    n = 20000
    # Points throughout the obstacle grown by the margin, including its rim and top edge.
    r = (ob.radius + margin) * np.sqrt(rng.uniform(0, 1, n))
    r[: n // 4] = ob.radius + margin
    a = rng.uniform(0, 2 * math.pi, n)
    z = rng.uniform(0, ob.height + margin, n)
    z[: n // 8] = ob.height + margin
    pts = np.stack([ob.x + r * np.cos(a), ob.y + r * np.sin(a), z], axis=1)
    d = np.linalg.norm(pts[:, None, :] - centres[None], axis=2)
    assert np.all((d <= radii[None] + 1e-9).any(axis=1))
    # Conservative but not wasteful: no sphere bulges more than 15 % past the radius.
    assert np.all(radii <= 1.15 * (ob.radius + margin))
    assert all(s.name.startswith("obstacle_") for s in spheres)


def test_side_of_paths() -> None:
    spec = _spec()
    x = np.linspace(0.33, 0.72, 60)
    bump = np.sin(np.linspace(0, math.pi, 60))
    left = np.stack([x, 0.2 * bump, np.full(60, 0.12)], axis=1)
    right = left * np.array([1, -1, 1])
    over = np.stack([x, np.zeros(60), 0.12 + 0.3 * bump], axis=1)
    short = left[:10]
    assert spec.side_of(left) == "left"
    assert spec.side_of(right) == "right"
    assert spec.side_of(over) == "over"
    assert spec.side_of(short) == "none"
    assert spec.side_of(np.zeros((0, 3))) == "none"
    assert spec.side_of(np.full((5, 3), np.nan)) == "none"
    # The first crossing decides, even if the path later swings to the other side.
    wiggle = np.concatenate([left, right[::-1], right])
    assert spec.side_of(wiggle) == "left"


def test_side_of_follows_the_start_to_target_line() -> None:
    # A diagonal task: "left" is to the left of the start-to-target direction, not of +x.
    spec = _spec(
        target=np.array([0.6, 0.3, 0.0]),
        start_tool=np.array([0.3, 0.0, 0.13]),
        obstacle=Obstacle(x=0.45, y=0.15, radius=0.03, height=0.25),
    )
    _, left = spec.axis()
    s = np.linspace(0, 1, 50)[:, None]
    line = spec.start_tool[:2] + s * (spec.target[:2] - spec.start_tool[:2])
    path = np.concatenate([line + 0.15 * np.sin(np.pi * s) * left, np.full((50, 1), 0.1)], axis=1)
    assert spec.side_of(path) == "left"


def test_monitor_needs_the_dwell_and_no_collision() -> None:
    spec = _spec()
    above = np.array([0.72, 0.01, 0.05])
    away = np.array([0.5, 0.2, 0.12])
    mon = TaskMonitor(spec)
    for k in range(1, 20):
        mon.update(0.01 * k, above)
    assert not mon.done  # 0.19 s inside: not yet
    mon.update(0.25, away)  # leaving resets the dwell clock
    for k in range(26, 57):
        mon.update(0.01 * k, above)
    assert mon.success and mon.done
    out = mon.outcome()
    assert out.success and not out.collided and out.time == pytest.approx(0.56)

    mon = TaskMonitor(spec)
    mon.update(0.01, above)
    mon.update(0.02, above, new_collisions=1, clearance=-0.002)
    assert mon.done and not mon.success and mon.outcome().collided
    assert mon.outcome().min_clearance == pytest.approx(-0.002)
    # After the verdict nothing changes.
    for k in range(3, 60):
        mon.update(0.01 * k, above)
    assert not mon.success

    mon = TaskMonitor(spec)
    assert not mon.update(spec.timeout - 0.01, away)
    assert mon.update(spec.timeout, away) and mon.timed_out and not mon.success


def test_target_zone_height_and_radius() -> None:
    spec = _spec()
    assert spec.tool_at_target(np.array([0.72 + 0.039, 0.0, 0.07]))
    assert not spec.tool_at_target(np.array([0.72 + 0.041, 0.0, 0.05]))
    assert not spec.tool_at_target(np.array([0.72, 0.0, 0.09]))
