"""`bench closed-loop`: the shipped reach model drives SimWorld through the controller core on sim
time; the episode is judged by the task's monitor and every tick publishes one command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pybullet_data", reason="pybullet_data ships the Panda URDF")

from diffusion_controller.bench.closed_loop import parse_seeds
from diffusion_controller.cli import main

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "panda_reach_diffusion")
LABELS = {"success", "collision", "timeout", "missed_grasp", "dropped", "wrong_place"}


def test_parse_seeds() -> None:
    assert parse_seeds("5-7") == [5, 6, 7]
    assert parse_seeds("1,4") == [1, 4]


def test_shipped_reach_model_runs_an_episode(tmp_path) -> None:
    model = MODEL
    out = tmp_path / "cl.json"
    assert main(["bench", "closed-loop", "--model", model, "--seeds", "30000",
                 "--json", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    (row,) = doc["episodes"]
    assert row["label"] in LABELS and row["success"] == (row["label"] == "success")
    # one command per 10 ms tick from the first chunk on, until the monitor decided
    assert 0.5 * row["time_s"] / 0.01 <= row["commands"] <= row["time_s"] / 0.01 + 1
    assert doc["summary"]["episodes"] == 1


def test_bad_arguments() -> None:
    model = MODEL
    assert main(["bench", "closed-loop", "--model", model, "--task", "nope"]) == 2
    assert main(["bench", "closed-loop", "--model", model, "--set", "no_such_setting=1"]) == 2


def test_blind_shows_the_first_frame_only() -> None:
    from diffusion_controller.bench.closed_loop import run_episode
    from diffusion_controller.control import assembly
    from diffusion_controller.control.panda import panda_urdf_path
    from diffusion_controller.sim.tasks import get_task
    from diffusion_controller.sim.world import SimWorld

    values = assembly.default_values(model_path=MODEL, backend="onnxruntime",
                                     inference_mode="thread", inference_timeout=30.0)  # fmt: skip
    urdf = Path(panda_urdf_path()).read_text(encoding="utf-8")
    with SimWorld() as world:
        render, calls = world.render, []
        world.render = lambda: calls.append(1) or render()  # type: ignore[method-assign]
        row = run_episode(world, get_task("panda_reach"), 30001, values, urdf, blind=True)
    assert len(calls) == 1 and row["commands"] > 0
