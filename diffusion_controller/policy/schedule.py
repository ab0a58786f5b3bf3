"""Noise schedules and DDIM timestep selection (numpy), matching diffusers' DDIMScheduler.

Matching diffusers matters because Chi et al.'s results (and any weights trained with their code)
assume its exact schedule: the "squaredcos_cap_v2" betas, "leading" timestep spacing with offset 0,
and alpha_cumprod = 1 after the last step. Computed in float64; the sampler casts where it applies.
"""

from __future__ import annotations

import math

import numpy as np

MAX_BETA = 0.999


def _cosine_alpha_bar(t: float) -> float:
    """The improved-DDPM cosine alpha_bar(t) with s = 0.008, t in [0, 1]."""
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def betas_for(
    schedule: str, num_train_timesteps: int, beta_start: float = 0.0001, beta_end: float = 0.02
) -> np.ndarray:
    """Betas [T] for "linear", "scaled_linear" or "squaredcos_cap_v2" (cosine, capped at 0.999)."""
    n = int(num_train_timesteps)
    if n < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, n, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        out = [
            min(1.0 - _cosine_alpha_bar((i + 1) / n) / _cosine_alpha_bar(i / n), MAX_BETA)
            for i in range(n)
        ]
        return np.asarray(out, dtype=np.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}")


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """alpha_bar[t] = prod_{s <= t} (1 - beta_s)."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def ddim_timesteps(num_train_timesteps: int, steps: int) -> np.ndarray:
    """Descending int64 timesteps: "leading" spacing, offset 0 (diffusers' DDIM defaults).

    With ratio r = T // steps the timesteps are (steps-1)*r, ..., r, 0; the step from t goes to
    t - r (or to the clean sample when that is negative).
    """
    t, k = int(num_train_timesteps), int(steps)
    if not 1 <= k <= t:
        raise ValueError(f"steps must be in 1..{t}, got {steps}")
    ratio = t // k
    return (np.arange(k, dtype=np.int64) * ratio)[::-1].copy()


def ddim_prev_timestep(t: int, num_train_timesteps: int, steps: int) -> int:
    """The timestep DDIM steps to from `t` (negative means the final, noise-free sample)."""
    return int(t) - int(num_train_timesteps) // int(steps)
