"""Training samples: To observation frames ending at step i, and the H actions starting at i.

This is the same alignment the deployment uses: a chunk computed from the observation stamped t0
holds the targets for t0, t0 + dt, ... Episodes are padded by repeating their edges (the first
frame before the start, the final action after the end), so every step of every demonstration is
a sample and the policy learns to hold still at the goal.

Augmentation is a small random shift (replicate-pad and crop, the same for all frames of one camera
in a sample). No colour jitter: the task's target and obstacle are told apart by colour.
Random draws are keyed by a per-sample seed, so a resumed run sees the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffusion_controller.data.episode import Episode
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.normalize import Normalizer, fit_normalizers
from diffusion_controller.policy.preprocess import frames_to_chw_float


def compute_normalizers(episodes: Sequence[Episode], margin: float = 0.0) -> dict[str, Normalizer]:
    """Min/max statistics of joint states and actions over all episodes (same joint order)."""
    if not episodes:
        raise ValueError("compute_normalizers: no episodes")
    names = list(episodes[0].joint_names)
    for ep in episodes:
        if list(ep.joint_names) != names:
            raise ValueError(
                f"compute_normalizers: episodes disagree on joint order ({ep.joint_names} vs "
                f"{names}); load them with data.loading.load_episodes"
            )
    joints = np.concatenate([ep.joints for ep in episodes if len(ep)], axis=0)
    actions = np.concatenate([ep.actions for ep in episodes if len(ep)], axis=0)
    return fit_normalizers(joints, actions, margin)


class ChunkDataset(Dataset):
    """Samples as dicts of float32 tensors.

    images [To, Ncam, 3, H, W] in [0, 1]; joints [To, D] and actions [H, D] normalised, with
    D = cfg.action_dim: the arm's joints, then the gripper's dims (cfg.dim_names).
    An item may be an index or (index, seed); the seed drives the augmentation.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        cfg: PolicyConfig,
        normalizers: dict[str, Normalizer],
        augment: bool = True,
        shift: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.augment = bool(augment)
        h, w = cfg.image_size
        self.shift = max(1, round(0.04 * min(h, w))) if shift is None else int(shift)
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {shift}")
        for key in ("joints", "actions"):
            if key not in normalizers or normalizers[key].dim != cfg.action_dim:
                raise ValueError(f"normalizers need {key!r} with {cfg.action_dim} dimensions")
        self.joints: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.images: list[list[np.ndarray]] = []
        index: list[tuple[int, int]] = []
        for e, ep in enumerate(episodes):
            self._check(ep, e)
            self.joints.append(normalizers["joints"].normalize(ep.joints).astype(np.float32))
            self.actions.append(normalizers["actions"].normalize(ep.actions).astype(np.float32))
            self.images.append([ep.images[c] for c in cfg.cameras])
            index.extend((e, i) for i in range(len(ep)))
        if not index:
            raise ValueError("ChunkDataset: the episodes hold no samples")
        self.index = np.asarray(index, dtype=np.int64)

    def _check(self, ep: Episode, e: int) -> None:
        cfg = self.cfg
        if list(ep.joint_names) != cfg.dim_names:
            raise ValueError(
                f"episode {e}: joints {ep.joint_names} differ from the config's "
                f"{cfg.dim_names}; load episodes with data.loading.load_episodes(path, cfg)"
            )
        for cam in cfg.cameras:
            if cam not in ep.images:
                raise ValueError(f"episode {e}: no images for camera {cam!r}")
            shape = ep.images[cam].shape[1:3]
            if tuple(shape) != tuple(cfg.image_size):
                raise ValueError(
                    f"episode {e}: camera {cam!r} images are {shape}, the config expects "
                    f"{tuple(cfg.image_size)}; load episodes with data.loading.load_episodes"
                )

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def window(self, e: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices [To] ending at i and action indices [H] starting at i, edge-clamped."""
        last = self.joints[e].shape[0] - 1
        to, h = self.cfg.n_obs_steps, self.cfg.horizon
        obs = np.clip(np.arange(i - to + 1, i + 1), 0, last)
        act = np.clip(np.arange(i, i + h), 0, last)
        return obs, act

    def __getitem__(self, item: Any) -> dict[str, torch.Tensor]:
        if isinstance(item, (tuple, list)):
            idx, seed = int(item[0]), int(item[1])
        else:
            idx, seed = int(item), None
        e, i = (int(v) for v in self.index[idx])
        obs, act = self.window(e, i)
        rng = np.random.default_rng(seed) if self.augment else None
        frames = []
        for cam_frames in self.images[e]:
            clip = cam_frames[obs]  # [To, H, W, 3] uint8
            if rng is not None and self.shift > 0:
                clip = self._shift(clip, rng)
            frames.append(clip)
        images = frames_to_chw_float(np.stack(frames, axis=1))  # [To, Ncam, 3, H, W]
        return {
            "images": torch.from_numpy(images),
            "joints": torch.from_numpy(self.joints[e][obs]),
            "actions": torch.from_numpy(self.actions[e][act]),
        }

    def _shift(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Translate by up to `shift` pixels each way, replicating the border (pad and crop)."""
        h, w = clip.shape[1:3]
        dy, dx = rng.integers(-self.shift, self.shift + 1, size=2)
        rows = np.clip(np.arange(h) + dy, 0, h - 1)
        cols = np.clip(np.arange(w) + dx, 0, w - 1)
        return clip[:, rows][:, :, cols]

    def summary(self) -> dict[str, Any]:
        return {
            "episodes": len(self.joints),
            "samples": len(self),
            "cameras": list(self.cfg.cameras),
        }
