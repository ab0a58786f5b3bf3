"""Training: AdamW with warm-up and cosine decay, EMA weights, resumable checkpoints, DDP.

Recipe from Chi et al. 2023: AdamW (lr 1e-4, betas 0.95/0.999, weight decay 1e-6), 500 warm-up
steps then cosine decay, and an exponential moving average of the weights whose decay ramps up
as 1 - (1 + step)^-0.75; the artifact holds the EMA weights, which sample far more smoothly than
the raw ones. Diffusion nets learn to predict the noise added at a random timestep; the
regression baseline regresses the normalised chunk directly (MSE), which averages modes.

Reproducible and resumable: the sample order and the augmentation depend only on (seed, step), and
a checkpoint holds model, EMA, optimiser, scheduler, step and random states, so a rerun continues
exactly where the last one stopped. Under torchrun (WORLD_SIZE > 1) it trains with
DistributedDataParallel, one process per GPU; rank 0 writes checkpoints and the artifact.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from diffusion_controller.data.episode import Episode
from diffusion_controller.policy.artifact import save_artifact
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.dataset import ChunkDataset, compute_normalizers
from diffusion_controller.policy.ddim import DDIMCore
from diffusion_controller.policy.model import build_net
from diffusion_controller.policy.normalize import (
    Normalizer,
    normalizers_from_dict,
    normalizers_to_dict,
)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "latest.pt"
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Optimisation settings. `epochs`, when set, overrides `steps` (epochs x batches per epoch)."""

    steps: int = 20000
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-6
    adam_betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int = 500
    lr_schedule: str = "cosine"
    grad_clip: float | None = None
    ema_power: float = 0.75
    ema_inv_gamma: float = 1.0
    ema_max_decay: float = 0.9999
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    augment: bool = True
    normalizer_margin: float = 0.0

    def __post_init__(self) -> None:
        def positive_int(name: str, lo: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"TrainConfig.{name} must be an integer >= {lo}, got {v!r}")

        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            positive_int(name)
        for name in ("warmup_steps", "num_workers", "seed"):
            positive_int(name, 0)
        if self.epochs is not None:
            positive_int("epochs")
        for name in ("lr", "ema_power", "ema_inv_gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"TrainConfig.{name} must be a positive number, got {v!r}")
        for name in ("weight_decay", "normalizer_margin"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {v!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"TrainConfig.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )
        if not 0.0 <= self.ema_max_decay < 1.0:
            raise ValueError(
                f"TrainConfig.ema_max_decay must be in [0, 1), got {self.ema_max_decay}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        b1, b2 = self.adam_betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"TrainConfig.adam_betas must be in [0, 1), got {self.adam_betas}")
        self.adam_betas = (float(b1), float(b2))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown}")
        kw = dict(data)
        if "adam_betas" in kw:
            kw["adam_betas"] = tuple(kw["adam_betas"])
        return cls(**kw)


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    start_step: int
    final_loss: float
    wall_time_s: float
    weights_sha256: str
    num_params: int
    history: list[dict[str, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "resumed_from": self.start_step,
            "final_loss": self.final_loss,
            "wall_time_s": self.wall_time_s,
            "num_params": self.num_params,
            "weights_sha256": self.weights_sha256[:16],
        }


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


def train(
    episodes: Sequence[Episode],
    cfg: PolicyConfig,
    tcfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    resume: bool = True,
    *,
    command: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `cfg.kind` on `episodes` (conformed to cfg) and write the artifact into `out_dir`."""
    out = os.fspath(out_dir)
    world, rank, local_rank = _dist_env()
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    device = _resolve_device(tcfg.device, world, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    ckpt = read_checkpoint(out) if resume else None
    if ckpt is not None:
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{checkpoint_path(out)}: unsupported checkpoint version {ckpt.get('version')!r}"
            )
        if ckpt["policy"] != cfg.to_dict():
            raise ValueError(
                f"{checkpoint_path(out)} was written for a different policy config; "
                "train into another directory or pass resume=False (--no-resume)"
            )
        normalizers: dict[str, Normalizer] = normalizers_from_dict(
            ckpt["normalizers"], dim=cfg.action_dim
        )
    else:
        normalizers = compute_normalizers(list(episodes), margin=tcfg.normalizer_margin)

    dataset = ChunkDataset(episodes, cfg, normalizers, augment=tcfg.augment)
    per_epoch = max(1, len(dataset) // (tcfg.batch_size * world))
    total = tcfg.epochs * per_epoch if tcfg.epochs is not None else tcfg.steps

    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed % 2**32)
    random.seed(tcfg.seed)
    net = build_net(cfg).to(device)
    ema = EMA(net, tcfg.ema_power, tcfg.ema_inv_gamma, tcfg.ema_max_decay)
    objective = _Objective(net, cfg).to(device)
    model: nn.Module = objective
    if distributed:
        model = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=tcfg.lr, betas=tcfg.adam_betas, weight_decay=tcfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(tcfg.warmup_steps, total, tcfg.lr_schedule)
    )
    gen = torch.Generator(device=device)
    gen.manual_seed(tcfg.seed * 7919 + rank)

    start, history, wall_before = 0, [], 0.0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scheduler.lr_lambdas[0] = _lr_lambda(tcfg.warmup_steps, total, tcfg.lr_schedule)
        _set_rng_state(ckpt["rng"], gen)
        start = int(ckpt["step"])
        history = list(ckpt.get("history", []))
        wall_before = float(ckpt.get("wall_time_s", 0.0))

    stream = _BatchStream(len(dataset), tcfg.batch_size, tcfg.seed, start, rank, world)
    loader = DataLoader(
        dataset,
        batch_sampler=stream,
        num_workers=tcfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=tcfg.num_workers > 0,
    )

    def snapshot(step: int, elapsed: float) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "policy": cfg.to_dict(),
            "normalizers": normalizers_to_dict(normalizers),
            "train_config": tcfg.to_dict(),
            "model": net.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(gen),
            "history": history,
            "wall_time_s": elapsed,
        }

    is_main = rank == 0
    bar = None
    if progress and is_main and start < total:
        from diffusion_controller.progress import Progress

        bar = Progress(f"train {cfg.kind}", total, "step", initial=start)
    t0 = time.monotonic()
    window: list[float] = []
    step = start
    objective.train()
    batches = iter(loader)
    try:
        while step < total:
            batch = next(batches)
            images = batch["images"].to(device, non_blocking=True)
            joints = batch["joints"].to(device, non_blocking=True)
            actions = batch["actions"].to(device, non_blocking=True)
            b = actions.shape[0]
            noise = torch.randn(actions.shape, generator=gen, device=device)
            t = torch.randint(
                0, cfg.diffusion.num_train_timesteps, (b,), generator=gen, device=device
            )
            loss = model(images, joints, actions, noise, t)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at step {step}; lower the learning rate or "
                    "check the data for outliers"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), tcfg.grad_clip)
            optimizer.step()
            scheduler.step()
            ema.update(net)
            step += 1
            window.append(float(loss.detach()))
            if step % tcfg.log_every == 0 or step == total:
                mean = float(np.mean(window))
                if distributed:  # log the loss over all ranks' batches, identical everywhere
                    m = torch.tensor([mean], dtype=torch.float64, device=device)
                    torch.distributed.all_reduce(m)
                    mean = float(m.item()) / world
                history.append({"step": step, "loss": mean, "lr": scheduler.get_last_lr()[0]})
                window = []
                if bar is not None:
                    bar.note(loss=round(mean, 5))
            if bar is not None:
                bar.update(1)
            if is_main and (step % tcfg.checkpoint_every == 0 or step == total):
                _save_checkpoint(out, snapshot(step, wall_before + time.monotonic() - t0))
    finally:
        if bar is not None:
            bar.close()
        del batches

    wall = wall_before + time.monotonic() - t0
    final_loss = float(history[-1]["loss"]) if history else float("nan")
    sha, num_params = "", sum(p.numel() for p in net.parameters())
    if is_main:
        from diffusion_controller.data.loading import summarize

        data = summarize(list(episodes))
        data["samples"] = len(dataset)
        cmd = command if command is not None else " ".join(shlex.quote(a) for a in sys.argv)
        training = {
            "steps": step,
            "batch_size": tcfg.batch_size,
            "world_size": world,
            "lr": tcfg.lr,
            "seed": tcfg.seed,
            "device": str(device),
            "final_loss": float(f"{final_loss:.6g}"),
            "wall_time_s": round(wall, 1),
            "ema": f"power {tcfg.ema_power}, max decay {tcfg.ema_max_decay} "
            f"(final {ema.decay():.5f})",
            "command": cmd,
            "torch": torch.__version__,
        }
        card = {
            "data": f"{data['episodes']} episodes, {data['frames']} frames "
            f"({data['duration_s']:.0f} s), {data['samples']} samples",
            **{k: v for k, v in training.items() if k != "ema"},
            "weights": f"EMA ({training['ema']})",
        }
        sha = save_artifact(
            out,
            ema.model,
            cfg,
            normalizers,
            card=card,
            extra_meta={
                "training": training,
                "data": data,
                "train_config": tcfg.to_dict(),
                "history": history,
            },
        )
    if distributed:
        torch.distributed.barrier()
    return TrainResult(
        out_dir=out,
        steps=step,
        start_step=start,
        final_loss=final_loss,
        wall_time_s=wall,
        weights_sha256=sha,
        num_params=num_params,
        history=history,
    )
