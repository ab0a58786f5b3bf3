"""A policy with a gripper end to end: a tiny model trains on a recording with a gripper (the
recording of test_gripper_data.py), exports, and onnxruntime gives the torch outputs; models from
before grippers load and run unchanged."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_controller.data.gripper import WIDTH_DIM, GripperConfig
from diffusion_controller.data.loading import load_episodes
from diffusion_controller.policy.artifact import load_config
from diffusion_controller.policy.train import TrainConfig, train
from diffusion_controller.runtime.loading import load_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gripper_data import ARM, tiny_config, write_bag

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gripper") / "demo"
    write_bag(path)
    return path


def test_train_export_and_onnxruntime_match_torch_with_a_gripper(bag: Path, tmp_path: Path,
                                                                 capsys) -> None:
    from diffusion_controller.cli import main

    spec = tmp_path / "gripper.yaml"
    spec.write_text("gripper: {}\n")
    out = tmp_path / "model"
    rc = main(["train", "--data", str(bag), "--spec", str(spec), "--out", str(out),
               "--steps", "3", "--batch-size", "4", "--horizon", "8", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    cfg, norms, _ = load_config(out)
    assert cfg.gripper is not None and cfg.action_dim == 8 and cfg.joint_names == ARM
    assert norms["actions"].dim == 8
    assert norms["actions"].low[7] == pytest.approx(0.02, abs=1e-3)
    assert norms["actions"].high[7] == pytest.approx(0.08, abs=1e-3)
    card = (out / "MODEL_CARD.md").read_text()
    assert "gripper: panda_finger_joint1, panda_finger_joint2 -> gripper/width" in card
    assert f"| {WIDTH_DIM} |" in card
    ref = load_backend(out, "torch")
    ort = load_backend(out, "onnxruntime")
    obs = ref.random_observation(np.random.default_rng(0))
    assert obs.joints.shape == (2, 8)
    a, b = ref.infer(obs, seed=0).actions, ort.infer(obs, seed=0).actions
    assert a.shape == b.shape == (8, 8)
    assert float(np.max(np.abs(a - b))) <= 1e-4
    # the gripper dim stays inside the demonstrated range (the sampler clips to it)
    assert np.all(a[:, 7] >= norms["actions"].low[7] - 1e-6)
    assert np.all(a[:, 7] <= norms["actions"].high[7] + 1e-6)
    # warm start and prefix inpainting carry the gripper dims too
    c = ref.infer(obs, seed=1, warm_start=a, warm_start_strength=0.5, prefix=a[:2]).actions
    assert c.shape == (8, 8) and np.all(np.isfinite(c))


def test_train_api_with_gripper_episodes(bag: Path, tmp_path: Path) -> None:
    cfg = tiny_config(gripper=GripperConfig())
    episodes = load_episodes(bag, cfg)
    tcfg = TrainConfig(steps=2, batch_size=4, checkpoint_every=1)
    result = train(episodes, cfg, tcfg, tmp_path / "m", progress=False)
    assert np.isfinite(result.metrics()["final_loss"])
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["policy"]["gripper"]["mapping"] == "width"


def test_a_model_from_before_grippers_loads_and_runs(tmp_path: Path) -> None:
    src = REPO / "models" / "panda_reach_diffusion"
    if not (src / "config.json").is_file():
        pytest.skip("the shipped reach model is not in this checkout")
    model = tmp_path / "reach"
    shutil.copytree(src, model)
    doc = json.loads((model / "config.json").read_text())
    assert "gripper" not in doc["policy"]
    cfg, _, _ = load_config(model)
    assert cfg.gripper is None and cfg.action_dim == 7 and cfg.dim_names == cfg.joint_names
    for name in ("torch", "onnxruntime"):
        b = load_backend(model, name)
        obs = b.random_observation(np.random.default_rng(0))
        actions = b.infer(obs, seed=0, steps=2).actions
        assert actions.shape == (cfg.horizon, 7) and np.all(np.isfinite(actions))
