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

import math
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from diffusion_controller.data.episode import Episode
from diffusion_controller.policy.artifact import save_artifact
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.dataset import ChunkDataset, compute_normalizers
from diffusion_controller.policy.model import build_net
from diffusion_controller.policy.normalize import (
    Normalizer,
    normalizers_from_dict,
    normalizers_to_dict,
)
from diffusion_controller.policy.train_parts import (  # noqa: F401 (re-exported)
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    CHECKPOINT_VERSION,
    EMA,
    _BatchStream,
    _dist_env,
    _lr_lambda,
    _Objective,
    _resolve_device,
    _rng_state,
    _save_checkpoint,
    _set_rng_state,
    checkpoint_path,
    init_weights,
    read_checkpoint,
)


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


def train(
    episodes: Sequence[Episode],
    cfg: PolicyConfig,
    tcfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    resume: bool = True,
    *,
    command: str | None = None,
    progress: bool = True,
    init_from: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train `cfg.kind` on `episodes` (conformed to cfg) and write the artifact into `out_dir`.

    `init_from`: a model artifact of the same policy config whose weights and normalizers start a
    new run (fine-tuning, or continuing a shipped model on a machine without its checkpoints);
    a checkpoint in `out_dir` still wins, so an interrupted fine-tune resumes as any run does.
    """
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
    init = None
    if ckpt is None and init_from is not None:
        init = init_weights(init_from, cfg)
        normalizers = init.normalizers
    elif ckpt is None:
        normalizers = compute_normalizers(list(episodes), margin=tcfg.normalizer_margin)

    dataset = ChunkDataset(episodes, cfg, normalizers, augment=tcfg.augment)
    per_epoch = max(1, len(dataset) // (tcfg.batch_size * world))
    total = tcfg.epochs * per_epoch if tcfg.epochs is not None else tcfg.steps

    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed % 2**32)
    random.seed(tcfg.seed)
    net = build_net(cfg).to(device)
    if init is not None:
        net.load_state_dict(init.state)
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
    init_source = init.source if init is not None else None
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
        init_source = ckpt.get("init_from")

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
            "init_from": init_source,
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
        if init_source:
            training["initialized_from"] = init_source
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
