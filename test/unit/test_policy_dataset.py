"""ChunkDataset: windows aligned like deployment, edge padding, normalisation, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_controller.data.episode import Episode
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.dataset import ChunkDataset, compute_normalizers

JOINTS = ["a", "b"]


def episode(t: int = 6, offset: float = 0.0, size=(12, 12)) -> Episode:
    k = np.arange(t, dtype=np.float64)
    joints = np.stack([k + offset, -k], axis=1)
    actions = joints + 0.5
    frames = np.zeros((t, *size, 3), np.uint8)
    frames[:, :, :, 0] = (k * 10).astype(np.uint8)[:, None, None]  # frame index in red
    frames[:, 2:4, 2:4, 1] = 255  # a green marker for the shift test
    return Episode(JOINTS, k * 0.1, joints, actions, {"camera": frames})


def cfg(**kw) -> PolicyConfig:
    base = {
        "image_size": (12, 12),
        "n_obs_steps": 2,
        "horizon": 4,
        "n_action_steps": 2,
        "unet": {"down_dims": [16, 32], "n_groups": 4, "step_embed_dim": 16},
    }
    base.update(kw)
    return PolicyConfig.cpu_default(JOINTS, **base)


def test_windows_pad_with_edges_and_align_actions_with_the_last_frame() -> None:
    eps = [episode(6), episode(3, offset=100.0)]
    ds = ChunkDataset(eps, cfg(), compute_normalizers(eps), augment=False)
    assert len(ds) == 9
    obs, act = ds.window(0, 0)
    assert obs.tolist() == [0, 0] and act.tolist() == [0, 1, 2, 3]
    obs, act = ds.window(0, 5)
    assert obs.tolist() == [4, 5] and act.tolist() == [5, 5, 5, 5]
    item = ds[1]
    assert item["images"].shape == (2, 1, 3, 12, 12) and item["images"].dtype == torch.float32
    assert item["joints"].shape == (2, 2) and item["actions"].shape == (4, 2)
    # Red channel encodes the frame index: frames 0 and 1 for sample i=1.
    red = item["images"][:, 0, 0, 0, 0] * 255
    torch.testing.assert_close(red, torch.tensor([0.0, 10.0]))
    # Second episode, sample i=2: actions 2, then the last one repeated.
    norms = ds  # (normalised values checked through the inverse map)
    raw = compute_normalizers(eps)["actions"].unnormalize(norms[8]["actions"].numpy())
    np.testing.assert_allclose(raw[:, 0], [102.5, 102.5, 102.5, 102.5], rtol=1e-5)


def test_values_are_normalised() -> None:
    eps = [episode(6)]
    ds = ChunkDataset(eps, cfg(), compute_normalizers(eps), augment=False)
    allj = torch.stack([ds[i]["joints"] for i in range(len(ds))])
    assert float(allj.min()) == pytest.approx(-1.0) and float(allj.max()) == pytest.approx(1.0)
    img = ds[0]["images"]
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_augmentation_shifts_deterministically_by_seed() -> None:
    eps = [episode(6)]
    ds = ChunkDataset(eps, cfg(), compute_normalizers(eps), augment=True, shift=2)
    a, b = ds[(3, 11)]["images"], ds[(3, 11)]["images"]
    assert torch.equal(a, b)
    plain = ChunkDataset(eps, cfg(), compute_normalizers(eps), augment=False)[3]["images"]
    variants = {tuple(ds[(3, s)]["images"][0, 0, 1].nonzero()[0].tolist()) for s in range(40)}
    assert len(variants) > 3  # the marker moves
    for s in range(10):  # colours are untouched, the same shift for both frames
        img = ds[(3, s)]["images"]
        assert torch.equal(img[0, 0, 1], img[1, 0, 1])
        assert set(torch.unique(img[:, 0, 1]).tolist()) <= set(
            torch.unique(plain[:, 0, 1]).tolist()
        )


def test_inconsistent_episodes_are_rejected() -> None:
    eps = [episode(6)]
    norms = compute_normalizers(eps)
    swapped = Episode(["b", "a"], eps[0].stamps, eps[0].joints, eps[0].actions, eps[0].images)
    with pytest.raises(ValueError, match="load_episodes"):
        ChunkDataset([swapped], cfg(), norms)
    with pytest.raises(ValueError, match="expects"):
        ChunkDataset([episode(6, size=(10, 12))], cfg(), norms)
    with pytest.raises(ValueError, match="camera 'wrist'"):
        ChunkDataset(eps, cfg(cameras=["camera", "wrist"]), norms)
    with pytest.raises(ValueError, match="normalizers"):
        ChunkDataset(eps, cfg(), {"joints": norms["joints"]})
    with pytest.raises(ValueError, match="joint order"):
        compute_normalizers([eps[0], swapped])
    with pytest.raises(ValueError, match="no episodes"):
        compute_normalizers([])


def test_works_with_a_dataloader() -> None:
    eps = [episode(6), episode(5)]
    ds = ChunkDataset(eps, cfg(), compute_normalizers(eps))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["images"].shape == (4, 2, 1, 3, 12, 12)
    assert batch["actions"].shape == (4, 4, 2)
