"""DDIMSampler.sample: the full loop against diffusers, warm start, prefix inpainting, K samples.

Besides random networks, an analytic denoiser for a two-point data distribution (the exact
posterior-mean noise prediction) shows that the sampler lands on the data, picks both modes, and
that a committed prefix or a warm start from one mode keeps the chunk in that mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from diffusion_controller.policy.config import DiffusionConfig, PolicyConfig
from diffusion_controller.policy.ddim import DDIMCore
from diffusion_controller.policy.model import build_net
from diffusion_controller.policy.sampler import DDIMSampler

torch.set_num_threads(1)
H, J = 8, 2


class TwoPointDenoiser(nn.Module):
    """Optimal epsilon-prediction when the data are m1 or m2 with probability 1/2 each."""

    def __init__(self, core: DDIMCore, m1: Tensor, m2: Tensor) -> None:
        super().__init__()
        self.core, self.m = core, torch.stack([m1, m2])  # [2, H, J]
        self.horizon, self.action_dim = m1.shape
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.calls += 1
        a = self.core.alpha_bar(int(t[0]))
        d2 = ((x[:, None] - a**0.5 * self.m[None]) ** 2).sum(dim=(2, 3))  # [N, 2]
        w = torch.softmax(-d2 / (2 * (1 - a)), dim=1)
        x0 = torch.einsum("nk,khj->nhj", w, self.m)
        return (x - a**0.5 * x0) / (1 - a) ** 0.5


def modes() -> tuple[Tensor, Tensor]:
    ramp = torch.linspace(0.0, 0.8, H)[:, None].repeat(1, J)
    return ramp, -ramp


def small_net(seed: int = 0):
    torch.manual_seed(seed)
    cfg = PolicyConfig.cpu_default(
        ["a", "b"],
        image_size=(16, 16),
        horizon=H,
        n_obs_steps=1,
        unet={"down_dims": [16, 32], "n_groups": 4, "step_embed_dim": 16, "kernel_size": 3},
    )
    return cfg, build_net(cfg).eval()


@pytest.mark.parametrize("steps", [1, 4, 10])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_sample_matches_a_diffusers_loop(steps: int, eta: float) -> None:
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference implementation")
    cfg, net = small_net()
    sampler = DDIMSampler(cfg.diffusion)
    cond = torch.randn(2, net.cond_dim)
    ours = sampler.sample(
        net, cond, steps=steps, eta=eta, generator=torch.Generator().manual_seed(7)
    )
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=100,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        prediction_type="epsilon",
    )
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, H, J, generator=g)
    with torch.no_grad():
        for t in ref.timesteps:
            eps = net(x, torch.full((2,), int(t), dtype=torch.long), cond)
            x = ref.step(eps, t, x, eta=eta, generator=g).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_analytic_denoiser_lands_on_both_modes() -> None:
    sampler = DDIMSampler(DiffusionConfig())
    m1, m2 = modes()
    net = TwoPointDenoiser(sampler.core, m1, m2)
    out = sampler.sample(
        net, torch.zeros(1, 3), num_samples=64, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (64, H, J)
    d1 = (out - m1).abs().amax(dim=(1, 2))
    d2 = (out - m2).abs().amax(dim=(1, 2))
    assert torch.all(torch.minimum(d1, d2) < 0.05)
    frac = float((d1 < d2).float().mean())
    assert 0.2 < frac < 0.8
    assert net.calls == 8  # one network call per DDIM step, batched over the K samples


@pytest.mark.parametrize("mode", ["replace", "x0"])
def test_prefix_is_exact_and_with_a_warm_start_keeps_the_mode(mode: str) -> None:
    sampler = DDIMSampler(DiffusionConfig())
    m1, m2 = modes()
    net = TwoPointDenoiser(sampler.core, m1, m2)
    k = 3
    prefix = m2[:k][None] + 0.01  # committed actions from mode 2 (slightly off, still honoured)
    out = sampler.sample(
        net,
        torch.zeros(1, 3),
        num_samples=32,
        prefix=prefix,
        prefix_mode=mode,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(out[:, :k], prefix.expand(32, k, J))
    # Alone, the prefix keeps the rest of the chunk on the data (either mode is a valid
    # continuation of these nearly shared first actions) ...
    rest = torch.minimum(
        (out[:, k:] - m1[k:]).abs().amax(dim=(1, 2)), (out[:, k:] - m2[k:]).abs().amax(dim=(1, 2))
    )
    assert torch.all(rest < 0.1)
    # ... and together with a warm start from the previous chunk it stays in that chunk's mode.
    out = sampler.sample(
        net,
        torch.zeros(1, 3),
        num_samples=32,
        prefix=prefix,
        prefix_mode=mode,
        warm_start=m2[None],
        warm_start_strength=0.5,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(out[:, :k], prefix.expand(32, k, J))
    assert torch.all((out[:, k:] - m2[k:]).abs().amax(dim=(1, 2)) < 0.1)


def test_prefix_on_a_real_network_and_per_condition_prefixes() -> None:
    cfg, net = small_net()
    sampler = DDIMSampler(cfg.diffusion)
    cond = torch.randn(2, net.cond_dim)
    prefix = torch.randn(2, 4, J)
    out = sampler.sample(
        net, cond, prefix=prefix, num_samples=3, generator=torch.Generator().manual_seed(2)
    )
    assert out.shape == (6, H, J)
    assert torch.equal(out[:3, :4], prefix[0].expand(3, 4, J))
    assert torch.equal(out[3:, :4], prefix[1].expand(3, 4, J))
    assert torch.isfinite(out).all()


def test_warm_start_runs_fewer_steps_and_stays_close_at_low_strength() -> None:
    sampler = DDIMSampler(DiffusionConfig())
    m1, m2 = modes()
    net = TwoPointDenoiser(sampler.core, m1, m2)
    prev = (m1 + 0.05 * torch.sin(torch.arange(H * J, dtype=torch.float32)).reshape(H, J))[None]
    gen = torch.Generator().manual_seed(3)
    dist = {}
    for strength in (0.125, 0.5, 1.0):
        net.calls = 0
        out = sampler.sample(
            net,
            torch.zeros(1, 3),
            steps=8,
            warm_start=prev,
            warm_start_strength=strength,
            num_samples=16,
            generator=gen,
        )
        assert net.calls == max(1, round(8 * strength))
        dist[strength] = float((out - prev).abs().amax())
        # A warm start from mode 1 stays in mode 1 at low and medium strength.
        if strength <= 0.5:
            assert torch.all((out - m1).abs().amax(dim=(1, 2)) < 0.1)
    assert dist[0.125] < 0.06
    assert dist[0.125] <= dist[0.5] + 1e-6


def test_warm_start_on_a_real_network_is_close_at_low_strength() -> None:
    cfg, net = small_net(1)
    sampler = DDIMSampler(cfg.diffusion)
    cond = torch.randn(1, net.cond_dim)
    prev = 0.5 * torch.sin(torch.linspace(0, 3, H * J)).reshape(1, H, J)
    out = sampler.sample(
        net,
        cond,
        warm_start=prev,
        warm_start_strength=0.125,
        generator=torch.Generator().manual_seed(0),
    )
    assert float((out - prev).abs().amax()) < 0.1
    assert sampler.plan(8, 0.125) == [(0, -12)]
    assert len(sampler.plan(8, 0.5)) == 4


def test_deterministic_with_given_noise_and_eta_zero() -> None:
    cfg, net = small_net()
    sampler = DDIMSampler(cfg.diffusion)
    cond = torch.randn(1, net.cond_dim)
    noise = torch.randn(1, H, J)
    a = sampler.sample(net, cond, noise=noise)
    b = sampler.sample(net, cond, noise=noise.clone())
    assert torch.equal(a, b)
    assert float(a.abs().max()) <= 1.0 + 1e-5 or not cfg.diffusion.clip_sample


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 101}, "steps"),
        ({"eta": 2.0}, "eta"),
        ({"num_samples": 0}, "num_samples"),
        ({"noise": torch.zeros(1, H + 1, J)}, "noise"),
        ({"noise": torch.full((1, H, J), float("nan"))}, "noise"),
        ({"warm_start": torch.zeros(1, H, J + 1)}, "warm_start"),
        ({"warm_start": torch.zeros(1, H, J), "warm_start_strength": 0.0}, "strength"),
        ({"warm_start": torch.full((1, H, J), float("inf"))}, "warm_start"),
        ({"prefix": torch.zeros(1, H + 1, J)}, "prefix"),
        ({"prefix": torch.zeros(1, 0, J)}, "prefix"),
        ({"prefix": torch.zeros(3, 2, J)}, "prefix"),
        ({"prefix": torch.full((1, 2, J), float("nan"))}, "prefix"),
        ({"prefix": torch.zeros(1, 2, J), "prefix_mode": "guess"}, "prefix_mode"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match) -> None:
    cfg, net = small_net()
    with pytest.raises(ValueError, match=match):
        DDIMSampler(cfg.diffusion).sample(net, torch.zeros(1, net.cond_dim), **kwargs)


def test_bad_condition_raises() -> None:
    cfg, net = small_net()
    sampler = DDIMSampler(cfg.diffusion)
    with pytest.raises(ValueError, match="cond"):
        sampler.sample(net, torch.zeros(net.cond_dim))
    with pytest.raises(ValueError, match="NaN"):
        sampler.sample(net, torch.full((1, net.cond_dim), float("nan")))
