"""Evaluation of the pick_place task without ROS: its failure labels from the simulator's reports,
the bins as the summary's modes, the ablation perturbations' controller parameters, what the
configuration refuses, the per-task shipped models and cube_outcomes.png."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_controller.eval.artifact import PLOTS, plots_for, write_run
from diffusion_controller.eval.config import EvalConfig
from diffusion_controller.eval.metrics import (
    FAILURE_LABELS,
    EpisodeTrace,
    episode_result,
    pick_place_label,
)
from diffusion_controller.eval.paths import DEFAULT_BASELINE, DEFAULT_MODEL, task_models
from diffusion_controller.eval.perturbations import (
    CONTROLLER_ABLATIONS,
    controller_values,
    perturbation_for,
)
from diffusion_controller.eval.summary import summarise
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.spec import LIVE
from diffusion_controller.sim.perturbation import Perturbation
from diffusion_controller.sim.pick_place import sample_pick_place

SEED = 10004


@pytest.fixture(scope="module")
def spec():
    return sample_pick_place(SEED)


def _trace(spec, label: str, *, side: str = "none", reflexes: int = 0, collisions: int = 0,
           done: bool = True, perturbation: str = "none", policy: str = "diffusion"
           ) -> EpisodeTrace:  # fmt: skip
    """A trace as the evaluation records it: sim_arm's /sim/contacts reports for pick_place
    (sim_node._publish_contacts), the tool going down to the cube, the verdict last."""
    tr = EpisodeTrace(policy=policy, perturbation=perturbation, seed=spec.seed, spec=spec)
    tr.t_enable = 100.0
    start, cube = spec.start_tool, spec.cube
    reports = []
    for k in range(30):
        a = k / 29
        tool = (1 - a) * start + a * (cube + np.array([0.0, 0.0, 0.01]))
        reports.append({
            "episode": 3, "seed": spec.seed, "sim_time": 0.04 * k, "received": 99.9 + 0.04 * k,
            "tool": [float(x) for x in tool], "collision_events": 0, "collided": False,
            "success": False, "timed_out": False, "done": False, "side": "none", "label": "",
            "cube": [float(x) for x in cube], "min_clearance_episode": None, "reflexes": 0,
            "frames_dropped": 0,
        })  # fmt: skip
    reports[-1].update(
        done=done, label=label, side=side, success=label == "success", reflexes=reflexes,
        collision_events=collisions, collided=collisions > 0,
        timed_out=label in ("timeout", "missed_grasp"),
        cube=[float(spec.bins[0].x), float(spec.bins[0].y), 0.0225] if side != "none" else
        [float(x) for x in cube],
    )  # fmt: skip
    tr.reports = reports
    tr.end_reason = "verdict"
    return tr


@pytest.mark.parametrize("label", ["missed_grasp", "dropped", "wrong_place", "timeout"])
def test_the_monitors_failure_labels_are_the_episodes(spec, label: str) -> None:
    r = episode_result(_trace(spec, label))
    assert r.failure == label and label in FAILURE_LABELS and not r.success
    assert r.timed_out == (label in ("timeout", "missed_grasp"))
    assert math.isnan(r.min_target_distance_m)  # no target point in this task
    assert r.path_length_m > 0.1 and r.task["task"] == "pick_place"
    assert r.cube_end == pytest.approx(list(spec.cube))


def test_success_collision_and_reflex(spec) -> None:
    won = episode_result(_trace(spec, "success", side="left"))
    assert won.success and won.failure == "none" and won.side == "left"
    assert won.cube_end[:2] == pytest.approx([spec.bins[0].x, spec.bins[0].y])
    hit = episode_result(_trace(spec, "collision", collisions=2, reflexes=1))
    assert hit.failure == "collision" and hit.collisions == 2  # the collision comes first
    # The evaluation ends an episode at its first reflex, before the monitor's verdict.
    held = episode_result(_trace(spec, "", reflexes=1, done=False))
    assert held.failure == "reflex" and held.reflexes == 1
    # A reflex after which the cube still landed in a bin is a success all the same.
    assert episode_result(_trace(spec, "success", side="right", reflexes=1)).failure == "none"
    # No verdict at all (the wall guard ended it): a timeout.
    assert episode_result(_trace(spec, "", done=False)).failure == "timeout"


def test_pick_place_label_rules() -> None:
    assert pick_place_label(success=True, collided=True, reflex=True, monitor="x") == "none"
    assert pick_place_label(success=False, collided=True, reflex=True, monitor="") == "collision"
    assert pick_place_label(success=False, collided=False, reflex=True,
                            monitor="dropped") == "reflex"  # fmt: skip
    assert pick_place_label(success=False, collided=False, reflex=False,
                            monitor="odd") == "timeout"  # fmt: skip


def test_summary_modes_are_the_bins(spec) -> None:
    rows = [
        episode_result(_trace(spec, "success", side="left")),
        episode_result(_trace(spec, "success", side="right")),
        episode_result(_trace(spec, "missed_grasp", perturbation="blind")),
        episode_result(_trace(spec, "dropped", perturbation="blind")),
        episode_result(_trace(spec, "success", side="left", policy="regression")),
    ]
    s = summarise(rows, "diffusion", "regression", "trajectory", task="pick_place")
    assert s["task"] == "pick_place" and s["episodes"] == 4
    assert s["mode_fractions"]["left"] == 0.25 and s["mode_fractions"]["right"] == 0.25
    assert s["successful_mode_fractions"] == {"left": 0.5, "right": 0.5}
    assert s["by_perturbation"]["none"]["success_rate"] == 1.0
    assert s["by_perturbation"]["blind"]["success_rate"] == 0.0
    assert s["by_perturbation"]["blind"]["failures"] == {"missed_grasp": 1, "dropped": 1}
    b = s["baseline"]
    assert b["policy"] == "regression" and b["mode_fractions"]["left"] == 1.0
    assert b["by_perturbation"]["none"]["success_rate"] == 1.0


def test_ablations_set_the_controllers_live_parameters_and_restore_them() -> None:
    for name, values in CONTROLLER_ABLATIONS.items():
        for key in values:
            assert SPECS[key].when == LIVE, key  # set per episode, without a restart
        assert perturbation_for(name, sample_pick_place(1), 0.6) == Perturbation()
    names = ["none", "warm_start_off", "inpainting_off"]
    own = {"prefix_steps": 3}
    assert controller_values(names, "warm_start_off", own) == {"warm_start": False,
                                                                "prefix_steps": 3}
    assert controller_values(names, "inpainting_off", own) == {
        "warm_start": SPECS["warm_start"].default, "prefix_steps": 0}
    # Every other episode gets the policy's own values back.
    assert controller_values(names, "none", own) == {
        "warm_start": SPECS["warm_start"].default, "prefix_steps": 3}
    assert controller_values(["none", "blind"], "blind", own) == {}  # nothing new to set


def test_config_refuses_what_does_not_apply() -> None:
    assert EvalConfig(task="pick_place", perturbations=["none", "blind"]).validate() == []
    problems = EvalConfig(task="pick_place", perturbations=["obstacle_shift"]).validate()
    assert any("obstacle_shift" in p and "pick_place" in p for p in problems)
    assert EvalConfig(perturbations=["obstacle_shift"]).validate() == []  # the reach task's
    assert any("unknown task" in p for p in EvalConfig(task="stack").validate())
    assert EvalConfig().task == "panda_reach" and EvalConfig().timeout is None


def test_shipped_models_per_task() -> None:
    assert task_models("panda_reach") == (DEFAULT_MODEL, DEFAULT_BASELINE)
    assert task_models("pick_place") == ("models/pick_place_diffusion",
                                         "models/pick_place_regression")  # fmt: skip
    with pytest.raises(ValueError, match="known"):
        task_models("stack")


def test_the_artifact_draws_cube_outcomes_for_pick_place(spec, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    assert plots_for("panda_reach") == PLOTS
    rows = [episode_result(_trace(spec, "success", side="left")),
            episode_result(_trace(spec, "wrong_place", perturbation="blind"))]  # fmt: skip
    summary = summarise(rows, "diffusion", None, task="pick_place")
    written = write_run(tmp_path, {}, {}, rows, summary, task="pick_place")
    for name in plots_for("pick_place"):
        assert (tmp_path / name).stat().st_size > 0 and tmp_path / name in written
    reach = tmp_path / "reach"
    write_run(reach, {}, {}, [], summarise([], "diffusion", None), task="panda_reach")
    assert not (reach / "cube_outcomes.png").exists()
