"""Training pieces: TrainConfig validation, EMA warm-up, LR schedule, resumable sample stream."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from diffusion_controller.policy.train import EMA, TrainConfig, _BatchStream, _lr_lambda


def test_train_config_round_trip_and_validation() -> None:
    tc = TrainConfig(steps=10, batch_size=4, adam_betas=(0.9, 0.99))
    assert TrainConfig.from_dict(tc.to_dict()) == tc
    for bad in (
        {"steps": 0},
        {"batch_size": -1},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"weight_decay": -1.0},
        {"ema_max_decay": 1.0},
        {"epochs": 0},
        {"adam_betas": (1.0, 0.9)},
        {"grad_clip": 0.0},
        {"lr_schedule": "step"},
        {"steps": True},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"stepz": 3})


def test_ema_decay_warms_up_with_a_power_law_and_averages() -> None:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, power=0.75, max_decay=0.999)
    assert ema.decay() == 0.0  # first update copies
    decays = []
    for step in range(200):
        decays.append(ema.decay())
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update(model)
    assert all(a <= b for a, b in itertools.pairwise(decays))
    assert decays[10] == pytest.approx(1 - 11**-0.75)
    w = float(ema.model.weight[0, 0])
    assert 150 < w < 199  # lags behind the latest weights, ahead of the plain mean
    assert not ema.model.weight.requires_grad
    state = ema.state_dict()
    other = EMA(model)
    other.load_state_dict(state)
    assert other.updates == 200 and torch.equal(other.model.weight, ema.model.weight)


def test_lr_schedule_warms_up_then_decays() -> None:
    f = _lr_lambda(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    g = _lr_lambda(0, 100, "constant")
    assert g(0) == g(99) == 1.0


def take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_batch_stream_is_a_function_of_seed_and_step() -> None:
    full = take(_BatchStream(10, 3, seed=1, start_step=0), 9)
    assert all(len(b) == 3 for b in full)
    epoch0 = [i for b in full[:3] for i, _ in b]
    assert len(set(epoch0)) == 9  # no repeats within an epoch (one sample dropped)
    resumed = take(_BatchStream(10, 3, seed=1, start_step=4), 5)
    assert resumed == full[4:]
    assert take(_BatchStream(10, 3, seed=2, start_step=0), 3) != full[:3]
    seeds = [s for b in full for _, s in b]
    assert len(set(seeds)) == len(seeds)


def test_batch_stream_shards_ranks_and_handles_tiny_datasets() -> None:
    r0 = take(_BatchStream(12, 3, seed=0, start_step=0, rank=0, world=2), 2)
    r1 = take(_BatchStream(12, 3, seed=0, start_step=0, rank=1, world=2), 2)
    idx0 = {i for b in r0 for i, _ in b}
    idx1 = {i for b in r1 for i, _ in b}
    assert not idx0 & idx1 and len(idx0 | idx1) == 12
    tiny = take(_BatchStream(2, 5, seed=0, start_step=0), 2)
    assert all(len(b) == 5 for b in tiny) and {i for b in tiny for i, _ in b} == {0, 1}
