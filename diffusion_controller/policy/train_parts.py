"""The pieces policy/train.py puts together: the EMA of the weights, the loss as one module (so
DDP sees one forward), the endless reproducible batch stream, the learning-rate schedule, the
device and rank of a (torchrun) process, and the random states and checkpoint file that make a run
resumable exactly where it stopped.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Sampler

from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.ddim import DDIMCore

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "latest.pt"
CHECKPOINT_VERSION = 1


class EMA:
    """Exponential moving average of a model's weights with the power-law decay warm-up."""

    def __init__(
        self,
        model: nn.Module,
        power: float = 0.75,
        inv_gamma: float = 1.0,
        max_decay: float = 0.9999,
    ) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma, self.max_decay = power, inv_gamma, max_decay
        self.updates = 0

    def decay(self) -> float:
        value = 1.0 - (1.0 + self.updates / self.inv_gamma) ** -self.power
        return min(max(value, 0.0), self.max_decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


class _Objective(nn.Module):
    """The training loss as a module, so DDP sees one forward that uses every parameter."""

    def __init__(self, net: nn.Module, cfg: PolicyConfig) -> None:
        super().__init__()
        self.net = net
        self.kind = cfg.kind
        self.prediction_type = cfg.diffusion.prediction_type
        acp = torch.tensor(DDIMCore(cfg.diffusion).alphas_cumprod, dtype=torch.float32)
        self.register_buffer("sqrt_a", acp.sqrt(), persistent=False)
        self.register_buffer("sqrt_1ma", (1.0 - acp).sqrt(), persistent=False)

    def forward(
        self, images: Tensor, joints: Tensor, actions: Tensor, noise: Tensor, t: Tensor
    ) -> Tensor:
        cond = self.net.encode(images, joints)
        if self.kind == "regression":
            return F.mse_loss(self.net(cond), actions)
        sa = self.sqrt_a[t].view(-1, 1, 1)
        sb = self.sqrt_1ma[t].view(-1, 1, 1)
        noisy = sa * actions + sb * noise
        out = self.net(noisy, t, cond)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "sample":
            target = actions
        else:
            target = sa * noise - sb * actions
        return F.mse_loss(out, target)


class _BatchStream(Sampler):
    """Endless batches of (index, augmentation seed), a pure function of (seed, step, rank)."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start_step: int, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.batch, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.global_batch = batch_size * world
        self.per_epoch = max(1, n // self.global_batch)
        self.start_step = start_step

    def _epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        need = self.per_epoch * self.global_batch
        if need > self.n:  # fewer samples than one global batch: repeat them
            perm = np.resize(perm, need)
        return perm

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        epoch, offset = divmod(step, self.per_epoch)
        while True:
            order = self._epoch_order(epoch)
            for b in range(offset, self.per_epoch):
                lo = b * self.global_batch + self.rank * self.batch
                idx = order[lo : lo + self.batch]
                base = (self.seed * 1_000_003 + step) * 65_537 + self.rank * self.batch
                yield [(int(i), (base + k) % (2**63)) for k, i in enumerate(idx)]
                step += 1
            epoch, offset = epoch + 1, 0


def _lr_lambda(warmup: int, total: int, schedule: str = "cosine"):
    """Linear warm-up, then cosine decay to 0 at `total` (or constant)."""

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _resolve_device(requested: str, world: int, local_rank: int) -> torch.device:
    if world > 1 and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    return dev


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
        "noise": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    random.setstate(state["python"])
    gen.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(out_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(out_dir), CHECKPOINT_DIR, CHECKPOINT_FILE)


def read_checkpoint(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = checkpoint_path(out_dir)
    if not os.path.isfile(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: unreadable checkpoint ({exc}); delete it or pass resume=False (--no-resume)"
        ) from exc


def _save_checkpoint(out_dir: str, payload: dict[str, Any]) -> None:
    path = checkpoint_path(out_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class InitWeights:
    """What a run started from a model artifact takes from it (train(init_from=...))."""

    state: dict[str, Tensor]  # the artifact's (EMA) weights, as a state dict of the net
    normalizers: dict[str, Any]  # the artifact's: the weights were fitted to them
    source: str  # "<dir> (sha256 <first 12>)", recorded in the new model's card


def init_weights(model_dir: str | os.PathLike[str], cfg: PolicyConfig) -> InitWeights:
    """The weights and normalizers of the artifact in `model_dir` for a run of policy `cfg`.

    The artifact's policy config must equal `cfg` (same kind, joints, cameras, network): weights of
    another shape cannot start this run, and the error names the fields that differ.
    """
    from diffusion_controller.policy.artifact import load_artifact

    art = load_artifact(model_dir)
    mine, theirs = cfg.to_dict(), art.config.to_dict()
    if mine != theirs:
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(
            f"--init-from {os.fspath(model_dir)}: its policy config differs from this run's in "
            f"{differ}; train with the same --kind, --preset, joints, cameras and horizon"
        )
    state = {k: v.detach().clone() for k, v in art.net.state_dict().items()}
    return InitWeights(state, dict(art.normalizers),
                       f"{os.fspath(model_dir)} (sha256 {art.weights_sha256[:12]})")
