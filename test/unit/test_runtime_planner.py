"""ChunkPlanner: re-timing the running chunk onto the next grid, and the committed prefix length."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.control.types import Chunk
from diffusion_controller.runtime.planner import ChunkPlanner, retime
from diffusion_controller.settings.controller import SPECS

# The worker's settings of those names at the table's defaults.
DEFAULTS = {n: SPECS[n].default for n in ("prefix_steps", "latency_margin")}


def _chunk(t0: float = 10.0, dt: float = 0.1, h: int = 16, j: int = 3) -> Chunk:
    k = np.arange(h, dtype=np.float64)[:, None]
    return Chunk(t0=t0, dt=dt, positions=0.1 * k + np.arange(j)[None, :], seq=1)


def test_retime_is_linear_in_time_and_holds_the_ends() -> None:
    c = _chunk()
    out = retime(c, np.array([9.0, 10.0, 10.05, 10.25, 11.5, 12.0]))
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 0.05, 0.25, 1.5, 1.5], atol=1e-12)
    np.testing.assert_allclose(out[:, 2] - out[:, 0], 2.0, atol=1e-12)


def test_warm_start_is_previous_chunk_shifted_onto_the_new_grid() -> None:
    planner = ChunkPlanner(horizon=16, action_dt=0.1, num_joints=3, prefix_steps=4,
                           latency_margin=DEFAULTS["latency_margin"])
    plan = planner.plan(_chunk(), t0=10.33, expected_latency=0.0)
    assert plan.warm_start is not None and plan.warm_start.shape == (16, 3)
    # grid times 10.33 + 0.1k; chunk value at time t is (t - 10) for joint 0, clamped at 1.5
    expect = np.minimum(0.33 + 0.1 * np.arange(16), 1.5)
    np.testing.assert_allclose(plan.warm_start[:, 0], expect, atol=1e-9)
    assert np.all(plan.warm_start[-3:, 0] == 1.5)  # tail padded with the last action


def test_prefix_length_follows_latency_and_is_capped() -> None:
    planner = ChunkPlanner(horizon=16, action_dt=0.1, num_joints=3, prefix_steps=4,
                           latency_margin=0.0)
    assert planner.prefix_length(0.0) == 1
    assert planner.prefix_length(0.05) == 1
    assert planner.prefix_length(0.1) == 2  # exact multiple: action 1 starts as the chunk lands
    assert planner.prefix_length(0.25) == 3
    assert planner.prefix_length(5.0) == 4  # capped by prefix_steps
    margin = ChunkPlanner(horizon=16, action_dt=0.1, num_joints=3, prefix_steps=8,
                          latency_margin=0.06)
    assert margin.prefix_length(0.05) == 2
    off = ChunkPlanner(horizon=16, action_dt=0.1, num_joints=3, prefix_steps=0,
                       latency_margin=DEFAULTS["latency_margin"])
    assert off.prefix_length(1.0) == 0
    plan = off.plan(_chunk(), t0=10.2, expected_latency=0.3)
    assert plan.prefix is None and plan.warm_start is not None


def test_prefix_is_the_head_of_the_warm_start() -> None:
    planner = ChunkPlanner(horizon=16, action_dt=0.1, num_joints=3, prefix_steps=3,
                           latency_margin=0.0)
    plan = planner.plan(_chunk(), t0=10.2, expected_latency=0.15)
    assert plan.prefix_len == 2
    np.testing.assert_array_equal(plan.prefix, plan.warm_start[:2])
    np.testing.assert_allclose(plan.prefix[:, 1], [1.2, 1.3], atol=1e-12)


def test_no_previous_chunk_gives_no_warm_start_or_prefix() -> None:
    plan = ChunkPlanner(16, 0.1, 3, **DEFAULTS).plan(None, t0=1.0, expected_latency=0.1)
    assert plan.warm_start is None and plan.prefix is None and plan.prefix_len == 0
    assert "no previous chunk" in plan.reason


def test_chunk_entirely_in_the_past_gives_nothing() -> None:
    c = _chunk(t0=0.0)  # ends at 1.5 s
    plan = ChunkPlanner(16, 0.1, 3, **DEFAULTS).plan(c, t0=2.0, expected_latency=0.1)
    assert plan.warm_start is None and plan.prefix is None
    assert "ended before" in plan.reason


def test_single_action_chunk_and_chunk_in_the_future() -> None:
    one = Chunk(t0=5.0, dt=0.1, positions=np.array([[1.0, 2.0, 3.0]]))
    plan = ChunkPlanner(4, 0.1, 3, **DEFAULTS).plan(one, t0=5.0, expected_latency=0.0)
    np.testing.assert_array_equal(plan.warm_start, np.tile([1.0, 2.0, 3.0], (4, 1)))
    future = _chunk(t0=20.0)
    plan = ChunkPlanner(4, 0.1, 3, **DEFAULTS).plan(future, t0=19.0, expected_latency=0.0)
    np.testing.assert_allclose(plan.warm_start[:, 0], 0.0)  # held at the first action


@pytest.mark.parametrize(
    "kwargs",
    [dict(horizon=0), dict(action_dt=0.0), dict(action_dt=float("nan")), dict(prefix_steps=-1),
     dict(prefix_steps=17), dict(latency_margin=-0.1), dict(num_joints=0)],
)
def test_bad_construction_is_rejected(kwargs: dict) -> None:
    args = dict(horizon=16, action_dt=0.1, num_joints=3, **DEFAULTS) | kwargs
    with pytest.raises(ValueError):
        ChunkPlanner(**args)


def test_bad_inputs_are_rejected() -> None:
    planner = ChunkPlanner(16, 0.1, 3, **DEFAULTS)
    with pytest.raises(ValueError, match="expected_latency"):
        planner.plan(_chunk(), 10.0, float("nan"))
    with pytest.raises(ValueError, match="expected_latency"):
        planner.plan(_chunk(), 10.0, -0.1)
    with pytest.raises(ValueError, match="t0"):
        planner.plan(_chunk(), float("inf"), 0.1)
    with pytest.raises(ValueError, match=r"\[H>=1, 3\]"):
        planner.plan(_chunk(j=4), 10.0, 0.1)
    bad = _chunk()
    bad.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        planner.plan(bad, 10.0, 0.1)
