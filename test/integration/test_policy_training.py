"""Training end to end on a toy two-mode task: the product's argument in miniature.

Every demonstration starts the same way and the observation never says which way it will go:
half move the "lateral" joint to +0.6, half to -0.6. A diffusion policy must reproduce both
modes and nothing in between; a regression policy trained with MSE averages them to ~0, the
"in between" that, on the arm, drives straight into the obstacle. Also: resuming from a
checkpoint continues the step counter and gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusion_controller.data.episode import Episode
from diffusion_controller.policy.artifact import load_artifact
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.sampler import DDIMSampler
from diffusion_controller.policy.train import TrainConfig, checkpoint_path, read_checkpoint, train

torch.set_num_threads(1)
T = 20
JOINTS = ["progress", "lateral"]
GRAY = 128


def toy_episodes(n_pairs: int = 6) -> list[Episode]:
    episodes = []
    for e in range(2 * n_pairs):
        side = 1.0 if e % 2 == 0 else -1.0
        k = np.arange(T)
        joints = np.stack([k / T, np.zeros(T)], axis=1)  # the state does not reveal the side
        actions = np.stack([(k + 1) / T, side * 0.6 * np.minimum(1.0, (k + 1) / 4)], axis=1)
        images = {"camera": np.full((T, 16, 16, 3), GRAY, np.uint8)}
        episodes.append(Episode(JOINTS, k * 0.1, joints, actions, images))
    return episodes


def toy_config(kind: str) -> PolicyConfig:
    return PolicyConfig.cpu_default(
        JOINTS,
        kind=kind,
        image_size=(16, 16),
        n_obs_steps=1,
        horizon=8,
        n_action_steps=4,
        encoder={
            "variant": "small",
            "width": 8,
            "group_size": 8,
            "num_keypoints": 4,
            "feature_dim": 8,
        },
        unet={"down_dims": [32, 64], "n_groups": 8, "step_embed_dim": 32, "kernel_size": 3},
        mlp_dims=[64, 64],
    )


def lateral_means(model_dir, step_index: int = 10) -> np.ndarray:
    """Mean lateral target of 64 chunks sampled for the observation at `step_index`."""
    art = load_artifact(model_dir)
    norm = art.normalizers
    joints = norm["joints"].normalize(np.array([[step_index / T, 0.0]], np.float32))
    images = torch.full((1, 1, 1, 3, 16, 16), GRAY / 255.0)
    with torch.no_grad():
        cond = art.net.encode(images, torch.from_numpy(joints)[None])
        if art.config.kind == "diffusion":
            chunks = DDIMSampler(art.config.diffusion).sample(
                art.net, cond, num_samples=64, generator=torch.Generator().manual_seed(0)
            )
        else:
            chunks = art.net(cond).expand(64, -1, -1)
    actions = norm["actions"].unnormalize(chunks.numpy())
    assert actions.shape == (64, 8, 2) and np.all(np.isfinite(actions))
    return actions[:, :, 1].mean(axis=1)


@pytest.mark.slow
def test_diffusion_keeps_both_modes_and_regression_averages_them(tmp_path) -> None:
    episodes = toy_episodes()
    common = {
        "batch_size": 64,
        "lr": 3e-3,
        "warmup_steps": 50,
        "log_every": 50,
        "checkpoint_every": 10_000,
        "augment": False,
        "normalizer_margin": 0.2,
    }

    diff = train(
        episodes,
        toy_config("diffusion"),
        TrainConfig(steps=1000, **common),
        tmp_path / "diffusion",
        resume=False,
        progress=False,
    )
    assert diff.history[-1]["loss"] < 0.5 * diff.history[0]["loss"]
    lat = lateral_means(tmp_path / "diffusion")
    plus, minus = float(np.mean(lat > 0.3)), float(np.mean(lat < -0.3))
    between = float(np.mean(np.abs(lat) <= 0.3))
    assert plus >= 0.2 and minus >= 0.2, (plus, minus)
    assert between <= 0.1, between
    # The modes are where the data are, not merely on the right side.
    assert abs(float(np.median(np.abs(lat))) - 0.6) < 0.1

    reg = train(
        episodes,
        toy_config("regression"),
        TrainConfig(steps=300, **common),
        tmp_path / "regression",
        resume=False,
        progress=False,
    )
    assert np.isfinite(reg.final_loss)
    lat_reg = lateral_means(tmp_path / "regression")
    assert np.all(np.abs(lat_reg) < 0.15), lat_reg  # the average of +0.6 and -0.6

    # The artifact documents its training.
    meta = json.loads((tmp_path / "diffusion" / "config.json").read_text())["meta"]
    assert meta["training"]["steps"] == 1000 and meta["data"]["episodes"] == 12
    card = (tmp_path / "diffusion" / "MODEL_CARD.md").read_text()
    assert "12 episodes" in card and "final_loss" in card


def test_resume_continues_the_step_counter_and_matches_an_uninterrupted_run(tmp_path) -> None:
    episodes = toy_episodes(2)
    cfg = toy_config("diffusion")
    tc = {
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": 4,
        "log_every": 5,
        "checkpoint_every": 5,
        "augment": True,
    }
    first = train(episodes, cfg, TrainConfig(steps=10, **tc), tmp_path / "a", progress=False)
    assert (first.start_step, first.steps) == (0, 10)
    assert read_checkpoint(tmp_path / "a")["step"] == 10
    again = train(episodes, cfg, TrainConfig(steps=20, **tc), tmp_path / "a", progress=False)
    assert (again.start_step, again.steps) == (10, 20)
    assert [h["step"] for h in again.history] == [5, 10, 15, 20]
    assert read_checkpoint(tmp_path / "a")["step"] == 20

    # Nothing left to do: a rerun at the same step count trains nothing and keeps the weights.
    same = train(episodes, cfg, TrainConfig(steps=20, **tc), tmp_path / "a", progress=False)
    assert (same.start_step, same.steps) == (20, 20)

    # With a schedule that does not depend on the total, 10 + 10 steps equal 20 straight ones:
    # same samples, augmentation, noise and optimiser state after the resume.
    const = {**tc, "lr_schedule": "constant"}
    train(episodes, cfg, TrainConfig(steps=10, **const), tmp_path / "c", progress=False)
    train(episodes, cfg, TrainConfig(steps=20, **const), tmp_path / "c", progress=False)
    train(episodes, cfg, TrainConfig(steps=20, **const), tmp_path / "d", progress=False)
    c = load_artifact(tmp_path / "c").net.state_dict()
    d = load_artifact(tmp_path / "d").net.state_dict()
    for key in c:
        torch.testing.assert_close(c[key], d[key], rtol=1e-5, atol=1e-6)

    # A checkpoint from another config is refused unless resume is off.
    other = toy_config("regression")
    with pytest.raises(ValueError, match="different policy config"):
        train(episodes, other, TrainConfig(steps=2, **tc), tmp_path / "a", progress=False)
    fresh = train(
        episodes, other, TrainConfig(steps=2, **tc), tmp_path / "a", resume=False, progress=False
    )
    assert fresh.start_step == 0
    assert read_checkpoint(tmp_path / "a")["policy"]["kind"] == "regression"
    assert checkpoint_path(tmp_path / "a").endswith("latest.pt")
