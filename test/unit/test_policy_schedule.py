"""Noise schedule, DDIM timesteps and the DDIM update, checked against diffusers' DDIMScheduler.

diffusers is a test oracle only; the package never imports it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_controller.policy.config import DiffusionConfig
from diffusion_controller.policy.sampler import DDIMSampler
from diffusion_controller.policy.schedule import alphas_cumprod, betas_for, ddim_timesteps

diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference implementation")

torch.set_num_threads(1)


def oracle(cfg: DiffusionConfig):
    return diffusers.DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        clip_sample=cfg.clip_sample,
        clip_sample_range=cfg.clip_sample_range,
        prediction_type=cfg.prediction_type,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
    )


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear", "scaled_linear"])
@pytest.mark.parametrize("T", [100, 37])
def test_betas_and_alphas_match_diffusers(schedule: str, T: int) -> None:
    ref = oracle(DiffusionConfig(num_train_timesteps=T, beta_schedule=schedule, inference_steps=1))
    betas = betas_for(schedule, T)
    np.testing.assert_allclose(betas, ref.betas.double().numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        alphas_cumprod(betas), ref.alphas_cumprod.double().numpy(), rtol=2e-5, atol=1e-9
    )


@pytest.mark.parametrize("T", [100, 50, 7])
def test_timesteps_match_for_every_step_count(T: int) -> None:
    ref = oracle(DiffusionConfig(num_train_timesteps=T, inference_steps=1))
    for steps in range(1, T + 1):
        ref.set_timesteps(steps)
        assert ddim_timesteps(T, steps).tolist() == ref.timesteps.tolist(), steps
    with pytest.raises(ValueError):
        ddim_timesteps(T, 0)
    with pytest.raises(ValueError):
        ddim_timesteps(T, T + 1)


@pytest.mark.parametrize("steps", [1, 3, 8, 16, 100])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_step_by_step_against_diffusers(steps: int, eta: float, prediction_type: str) -> None:
    """Same timesteps, same x after every step, for the same model outputs and noise."""
    cfg = DiffusionConfig(prediction_type=prediction_type, inference_steps=steps, eta=eta)
    ours, ref = DDIMSampler(cfg), oracle(cfg)
    ref.set_timesteps(steps)
    assert ours.timesteps(steps).tolist() == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(steps)
    x_ours = torch.randn(3, 16, 7, generator=g)
    x_ref = x_ours.clone()
    ratio = cfg.num_train_timesteps // steps
    for t in ref.timesteps.tolist():
        # A stand-in "model": any deterministic function of x and t exercises the update.
        out = torch.tanh(x_ref * 0.7 + 0.01 * t) + 0.3 * torch.randn(3, 16, 7, generator=g)
        noise = torch.randn(3, 16, 7, generator=g)
        x_ref = ref.step(
            out, t, x_ref, eta=eta, variance_noise=noise if eta > 0 else None
        ).prev_sample
        x_ours = ours.step(out, t, t - ratio, x_ours, eta=eta, noise=noise)
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(x_ours).all()


def test_clip_sample_off_and_other_range() -> None:
    for clip, rng in ((False, 1.0), (True, 0.5)):
        cfg = DiffusionConfig(clip_sample=clip, clip_sample_range=rng, inference_steps=4)
        ours, ref = DDIMSampler(cfg), oracle(cfg)
        ref.set_timesteps(4)
        x = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(3)) * 3
        x_ref = x.clone()
        for t in ref.timesteps.tolist():
            eps = torch.sin(x)
            x_ref = ref.step(eps, t, x_ref).prev_sample
            x = ours.step(torch.sin(x), t, t - 25, x)
            torch.testing.assert_close(x, x_ref, rtol=1e-4, atol=1e-4)


def test_add_noise_matches_diffusers() -> None:
    cfg = DiffusionConfig()
    ours, ref = DDIMSampler(cfg), oracle(cfg)
    x0 = torch.randn(4, 16, 7)
    noise = torch.randn(4, 16, 7)
    for t in (0, 17, 99):
        torch.testing.assert_close(
            ours.add_noise(x0, noise, t),
            ref.add_noise(x0, noise, torch.full((4,), t, dtype=torch.long)),
            rtol=1e-5,
            atol=1e-5,
        )
