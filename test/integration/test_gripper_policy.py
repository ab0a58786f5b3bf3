"""A policy with a gripper end to end on the data side: a rosbag2 recording with finger joint
states and gripper commands is read into arm + width columns, a tiny model trains on it, exports,
and onnxruntime gives the torch outputs; models from before grippers load and run unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_controller.data.bag_writer import BagWriter
from diffusion_controller.data.gripper import WIDTH_DIM, GripperConfig
from diffusion_controller.data.loading import load_episodes
from diffusion_controller.data.spec import parse_spec
from diffusion_controller.policy.artifact import load_config
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.train import TrainConfig, train
from diffusion_controller.runtime.backend import load_backend

torch.set_num_threads(1)
ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000


def width_at(t: float) -> float:
    """The demonstration's commanded width: open, then closing from 1 s on."""
    return 0.08 if t < 1.0 else max(0.02, 0.08 - 0.1 * (t - 1.0))


def write_bag(path: Path, seconds: float = 2.0, gripper: bool = True) -> None:
    """A pick-like recording: 100 Hz joint states (arm + fingers lagging the command by 0.05 s),
    10 Hz arm and gripper commands, 10 Hz 16x16 images."""
    with BagWriter(path, gripper_topic="/gripper_controller/commands" if gripper else None) as w:
        for k in range(int(seconds * 100) + 1):
            t = k / 100
            q = np.linspace(-0.5, 0.5, 7) + 0.1 * t
            half = width_at(max(0.0, t - 0.05)) / 2
            w.joint_state(int(t * NS) + 1, [*ARM, *FINGERS], np.r_[q, half, half],
                          np.zeros(9))
            if k % 10 == 0:
                w.command(int(t * NS) + 1, q + 0.01)
                if gripper:
                    w.gripper_command(int(t * NS) + 1, np.full(2, width_at(t) / 2))
                w.image(int(t * NS) + 1, np.full((16, 16, 3), 40 + k % 200, np.uint8))


def tiny_config(**extra) -> PolicyConfig:
    return PolicyConfig.cpu_default(
        ARM, image_size=(16, 16), n_obs_steps=2, horizon=8, n_action_steps=4,
        encoder={"variant": "small", "width": 8, "group_size": 8, "num_keypoints": 4,
                 "feature_dim": 8},
        unet={"down_dims": [16, 32], "n_groups": 4, "step_embed_dim": 16, "kernel_size": 3},
        **extra)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gripper") / "demo"
    write_bag(path)
    return path


def test_a_recording_with_a_gripper_reads_into_arm_and_width_columns(bag: Path) -> None:
    spec = parse_spec({"gripper": {}})
    (ep,) = load_episodes(bag, action_dt=0.1, joint_names=ARM, cameras=["camera"], spec=spec)
    assert ep.joint_names == [*ARM, WIDTH_DIM]
    assert ep.joints.shape == ep.actions.shape == (len(ep), 8)
    assert ep.meta["gripper"] == GripperConfig().to_dict()
    t = ep.stamps + ep.meta["t0"]
    # action: the gripper command in force; state: the measured fingers' sum (0.05 s behind)
    np.testing.assert_allclose(ep.actions[:, 7], [width_at(round(x, 3)) for x in t], atol=1e-6)
    np.testing.assert_allclose(ep.joints[:, 7], [width_at(max(0.0, x - 0.05)) for x in t],
                               atol=2e-3)
    assert ep.actions[0, 7] == pytest.approx(0.08) and ep.actions[-1, 7] < 0.03
    # A policy with a gripper reads the default gripper topic without a spec.
    cfg = tiny_config(gripper=GripperConfig())
    (same,) = load_episodes(bag, cfg)
    np.testing.assert_array_equal(same.actions, ep.actions)
    # ... and an arm-only policy reads the same bag as before.
    (arm,) = load_episodes(bag, tiny_config())
    assert arm.joint_names == ARM and arm.actions.shape[1] == 7


def test_a_policy_with_a_gripper_needs_the_gripper_in_the_data(tmp_path: Path) -> None:
    write_bag(tmp_path / "arm_only", seconds=0.5, gripper=False)
    with pytest.raises(ValueError, match="/gripper_controller/commands"):
        load_episodes(tmp_path / "arm_only", tiny_config(gripper=GripperConfig()))
    spec = parse_spec({"gripper": {"joints": ["other_finger"], "mapping": "joints"}})
    with pytest.raises(ValueError, match="differs from the policy's"):
        load_episodes(tmp_path / "arm_only", tiny_config(gripper=GripperConfig()), spec=spec)


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
