"""The run artifact: every file written, readable, consistent with the episodes; real PNG plots;
and the perturbation presets and sensor perturbations the simulator applies."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from diffusion_controller.eval.artifact import (
    FILES,
    PLOTS,
    SUMMARY_FIELDS,
    default_run_dir,
    write_run,
)
from diffusion_controller.eval.metrics import (
    DiagSample,
    EpisodeResult,
    EpisodeTrace,
    episode_result,
)
from diffusion_controller.eval.perturbations import (
    SHIFT_M,
    describe,
    parse_perturbations,
    perturbation_for,
)
from diffusion_controller.eval.summary import summarise
from diffusion_controller.sim.perturbation import DelayLine, Perturbation, SensorPerturber
from diffusion_controller.sim.task import sample_task


def _result(policy: str, pert: str, seed: int, success: bool, side: str) -> EpisodeResult:
    spec = sample_task(seed)
    end = spec.target + np.array([0.0, 0.0, 0.04]) if success else spec.start_tool + 0.1
    side_y = {"left": 0.12, "right": -0.12}.get(side, 0.0)
    mid = np.array([spec.obstacle.x, spec.obstacle.y + side_y, 0.15])
    path = np.vstack([np.linspace(spec.start_tool, mid, 20), np.linspace(mid, end, 20)])
    tr = EpisodeTrace(policy=policy, perturbation=pert, seed=seed, spec=spec, t_enable=0.0)
    tr.reports = [
        {"episode": 1, "tool": list(map(float, p)), "sim_time": 0.04 * k}
        for k, p in enumerate(path)
    ]
    tr.reports[-1].update(
        success=success, done=True, side=side, timed_out=not success, min_clearance_episode=0.03
    )
    tr.diags = [
        DiagSample(
            t=0.2 * (k + 1),
            state="running",
            inferences=k,
            last_latency_ms=20.0 + k,
            tick_error_p99_ms=2.0,
        )
        for k in range(8)
    ]
    if pert == "obstacle_shift":
        tr.obstacle_updates = [{"t": 0.8, "obstacle": {**spec.to_dict()["obstacle"], "y": 0.05}}]
    return episode_result(tr)


@pytest.fixture(scope="module")
def results() -> list[EpisodeResult]:
    out = []
    for policy in ("diffusion", "regression"):
        for pert in ("none", "obstacle_shift"):
            for seed, side in ((10000, "left"), (10001, "right")):
                out.append(
                    _result(policy, pert, seed, policy == "diffusion" or side == "left", side)
                )
    return out


def test_every_file_is_written_and_consistent(tmp_path, results) -> None:
    out = tmp_path / "run"
    summary = summarise(results, "diffusion", "regression")
    written = write_run(out, {"eval": {"seeds": 2}}, {"seeds": [10000, 10001]}, results, summary)
    names = {p.name for p in written}
    assert set(FILES) | set(PLOTS) <= names
    for name in (*FILES, *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in PLOTS:  # real PNGs with something drawn
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    with open(out / "episodes.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(results)
    assert list(rows[0]) == EpisodeResult.csv_columns() and "path" not in rows[0]
    assert {(r["policy"], r["perturbation"], r["seed"]) for r in rows} == {
        (r.policy, r.perturbation, str(r.seed)) for r in results
    }
    episodes = json.loads((out / "episodes.json").read_text())
    assert len(episodes) == len(results) and len(episodes[0]["path"]) == 40
    assert episodes[0]["task"]["seed"] == 10000
    saved = json.loads((out / "summary.json").read_text())
    for key in SUMMARY_FIELDS:
        assert key in saved, key
    assert set(saved["mode_fractions"]) >= {"left", "right"}
    assert saved["episodes"] == 4 and saved["success_rate"] == 1.0
    assert saved["baseline"]["success_rate"] == 0.5
    assert saved["baseline"]["by_perturbation"]["obstacle_shift"]["episodes"] == 2
    assert saved["successful_mode_fractions"] == {"left": 0.5, "right": 0.5}
    assert "NaN" not in (out / "summary.json").read_text()  # non-finite values become null
    assert json.loads((out / "config.json").read_text()) == {"eval": {"seeds": 2}}


def test_plots_cope_with_no_episodes(tmp_path) -> None:
    summary = summarise([], "diffusion", None)
    assert summary["episodes"] == 0 and summary["baseline"] is None
    write_run(tmp_path, {}, {}, [], summary)
    assert all((tmp_path / name).is_file() for name in (*FILES, *PLOTS))
    assert json.loads((tmp_path / "summary.json").read_text()).get("plot_errors") is None


def test_default_run_dir_is_unique(tmp_path) -> None:
    first = default_run_dir(tmp_path, "eval")
    first.mkdir(parents=True)
    second = default_run_dir(tmp_path, "eval")
    assert first.name.startswith("eval-") and second != first


# --- perturbations -------------------------------------------------------------------------------
def test_parse_perturbations() -> None:
    assert parse_perturbations("none, delay,none") == ["none", "delay"]
    with pytest.raises(ValueError, match="unknown perturbation"):
        parse_perturbations("none,wind")
    with pytest.raises(ValueError, match="no perturbation"):
        parse_perturbations(" , ")
    assert set(describe()) == {"none", "delay", "noise", "obstacle_shift", "dropout", "blind",
                               "warm_start_off", "inpainting_off"}


def test_presets_and_the_sideways_shift() -> None:
    sides = set()
    for seed in range(10000, 10012):
        spec = sample_task(seed)
        p = perturbation_for("obstacle_shift", spec, start_delay=0.6)
        d = np.array(p.obstacle_shift)
        fwd, _ = spec.axis()
        assert np.linalg.norm(d) == pytest.approx(SHIFT_M) and abs(d @ fwd) < 1e-12
        assert p.obstacle_shift_time > 0.6 and p.shifts_obstacle and not p.problems()
        assert perturbation_for("obstacle_shift", spec, 0.6) == p  # the same seed, the same jump
        sides.add(int(np.sign(d @ spec.axis()[1])))
    assert sides == {-1, 1}
    spec = sample_task(10000)
    assert perturbation_for("none", spec, 0.6) == Perturbation()
    assert perturbation_for("delay", spec, 0.6).image_delay > 0
    assert perturbation_for("noise", spec, 0.6).joint_noise > 0
    assert perturbation_for("dropout", spec, 0.6).image_drop_prob > 0
    with pytest.raises(ValueError):
        perturbation_for("wind", spec, 0.6)


def test_perturbation_validation_round_trip() -> None:
    p = Perturbation(image_delay=0.1, image_noise=5.0, obstacle_shift=(0.01, -0.02))
    assert Perturbation.from_dict(p.to_dict()) == p and p.active and not Perturbation().active
    for bad in (
        {"image_delay": -0.1},
        {"image_drop_prob": 1.0},
        {"joint_noise": math.nan},
        {"obstacle_shift": [0.3, 0.0]},
        {"obstacle_shift": [0.1]},
        {"wind": 1.0},
        {"image_noise": "loud"},
    ):
        with pytest.raises(ValueError):
            Perturbation.from_dict(bad)


def test_sensor_perturber_drops_and_noises_reproducibly() -> None:
    img = np.full((24, 32, 3), 128, np.uint8)
    p = Perturbation(image_drop_prob=0.3, image_noise=10.0, joint_noise=0.01)
    a, b = SensorPerturber(p, seed=7), SensorPerturber(p, seed=7)
    outs = [a.image(img) for _ in range(400)]
    assert [o is None for o in outs] == [b.image(img) is None for _ in range(400)]
    assert 0.22 < a.dropped / a.frames < 0.38
    kept = np.stack([o for o in outs if o is not None]).astype(float)
    assert all(o.dtype == np.uint8 for o in outs if o is not None)
    assert abs(kept.mean() - 128) < 1.0 and 8.0 < kept.std() < 12.0
    q = np.zeros(9)
    noisy = np.stack([a.joints(q) for _ in range(500)])
    assert 0.008 < noisy.std() < 0.012
    clean = SensorPerturber(Perturbation(), seed=1)
    assert clean.image(img) is img and clean.joints(q) is not None and clean.dropped == 0
    with pytest.raises(ValueError):
        SensorPerturber(Perturbation(image_delay=5.0), seed=1)


def test_delay_line_releases_in_order_when_due() -> None:
    line = DelayLine()
    for k in range(5):
        line.push(0.1 * k + 0.15, k)
    assert line.pop_due(0.1) == [] and line.pop_due(0.25) == [0, 1]
    assert line.pop_due(1.0) == [2, 3, 4] and len(line) == 0
    line.push(1.0, "x")
    line.clear()
    assert line.pop_due(2.0) == []


def test_world_moves_the_obstacle() -> None:
    from diffusion_controller.sim.world import SimWorld, WorldConfig

    spec = sample_task(10000)
    with SimWorld(WorldConfig(image_width=32, image_height=32)) as world:
        with pytest.raises(ValueError, match="no obstacle"):
            world.move_obstacle(0.5, 0.0)
        world.reset(spec)
        before = world.min_clearance()
        moved = world.move_obstacle(spec.obstacle.x - 0.1, spec.obstacle.y)  # towards the arm
        assert moved.obstacle.x == pytest.approx(spec.obstacle.x - 0.1)
        assert world.spec is moved and world.min_clearance() < before - 0.05
        with pytest.raises(ValueError, match="finite"):
            world.move_obstacle(math.nan, 0.0)


def test_paths_legend_names_every_drawn_kind() -> None:
    """paths.png draws sides, success/failure styles, starts, obstacles (fixed and shifted) and
    targets: each gets a legend entry."""
    pytest.importorskip("matplotlib")
    from diffusion_controller.eval.plots import SIDE_COLOURS, path_legend_handles

    labels = {h.get_label() for h in path_legend_handles()}
    assert {f"side: {s}" for s in SIDE_COLOURS} <= labels
    assert {"success", "failure", "start", "obstacle", "shifted obstacle",
            "target (success radius)"} <= labels


def test_blind_replaces_every_frame_with_the_first() -> None:
    spec = sample_task(10000)
    p = perturbation_for("blind", spec, 0.6)
    assert p.image_freeze == 1.0 and p.active and not p.problems()
    assert Perturbation.from_dict(p.to_dict()) == p
    assert Perturbation(image_freeze=0.5).problems()  # 0 or 1 only
    pert = SensorPerturber(p, seed=3)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    first = pert.image(frames[0])
    assert first is not None and np.array_equal(first, frames[0])
    for f in frames[1:]:
        out = pert.image(f)
        assert out is not None and np.array_equal(out, frames[0])
