"""The DDIM update and sampling loop, written once for numpy arrays and torch tensors alike.

Only arithmetic, `.clip` and broadcasting are used, so the torch sampler (policy/sampler.py) and a
torch-free deployment (onnxruntime or TensorRT computing the network, numpy doing the rest) run
the very same update: a chunk cannot differ between backends because of the sampler.

Conventions: `x` is [N, H, J] in normalised units; `model_fn(x, t)` returns the network output for
integer timestep `t` (noise for "epsilon", the clean chunk for "sample", v for "v_prediction").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from diffusion_controller.policy.config import DiffusionConfig
from diffusion_controller.policy.schedule import alphas_cumprod, betas_for, ddim_timesteps

A = TypeVar("A")  # numpy.ndarray or torch.Tensor

PREFIX_MODES = ("replace", "x0")


class DDIMCore:
    """Schedule-aware DDIM arithmetic (diffusers' DDIMScheduler semantics, set_alpha_to_one)."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.num_train_timesteps = int(cfg.num_train_timesteps)
        self.alphas_cumprod = alphas_cumprod(
            betas_for(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
        )

    def alpha_bar(self, t: int) -> float:
        """alpha_cumprod at integer timestep t; 1.0 for t < 0 (the clean sample)."""
        t = int(t)
        if t >= self.num_train_timesteps:
            raise ValueError(f"timestep {t} is outside 0..{self.num_train_timesteps - 1}")
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def resolve_steps(self, steps: int | None) -> int:
        k = self.cfg.inference_steps if steps is None else steps
        if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= self.num_train_timesteps:
            raise ValueError(
                f"steps must be an integer in 1..{self.num_train_timesteps}, got {k!r}"
            )
        return int(k)

    def timesteps(self, steps: int | None = None) -> list[int]:
        return [int(t) for t in ddim_timesteps(self.num_train_timesteps, self.resolve_steps(steps))]

    def plan(
        self, steps: int | None = None, warm_start_strength: float | None = None
    ) -> list[tuple[int, int]]:
        """(t, t_prev) pairs to run. With a warm start only the last max(1, round(strength * steps))
        of them run, starting from the previous chunk re-noised to the first t of the plan."""
        k = self.resolve_steps(steps)
        ts = self.timesteps(k)
        ratio = self.num_train_timesteps // k
        pairs = [(t, t - ratio) for t in ts]
        if warm_start_strength is None:
            return pairs
        s = float(warm_start_strength)
        if not (math.isfinite(s) and 0.0 < s <= 1.0):
            raise ValueError(f"warm_start_strength must be in (0, 1], got {warm_start_strength!r}")
        n_run = max(1, min(k, int(s * k + 0.5)))
        return pairs[k - n_run :]

    # --- the update -------------------------------------------------------------------------
    def predict(self, model_out: A, t: int, x: A) -> tuple[A, A]:
        """(x0, eps) implied by the network output at timestep t (x0 not yet clipped)."""
        a = self.alpha_bar(t)
        sa, sb = a**0.5, (1.0 - a) ** 0.5
        kind = self.cfg.prediction_type
        if kind == "epsilon":
            return (x - sb * model_out) / sa, model_out
        if kind == "sample":
            return model_out, (x - sa * model_out) / sb
        if kind == "v_prediction":
            return sa * x - sb * model_out, sa * model_out + sb * x
        raise ValueError(f"unknown prediction_type {kind!r}")

    def output_for(self, x0: A, t: int, x: A) -> A:
        """The network output that would have implied clean sample `x0` from `x` at t."""
        a = self.alpha_bar(t)
        sa, sb = a**0.5, (1.0 - a) ** 0.5
        kind = self.cfg.prediction_type
        if kind == "epsilon":
            return (x - sa * x0) / sb
        if kind == "sample":
            return x0
        return (sa * x - x0) / sb

    def variance(self, t: int, t_prev: int) -> float:
        a, a_prev = self.alpha_bar(t), self.alpha_bar(t_prev)
        return (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)

    def step(
        self, model_out: A, t: int, t_prev: int, x: A, eta: float = 0.0, noise: A | None = None
    ) -> A:
        """One DDIM update x_t -> x_{t_prev}; needs `noise` (standard normal, like x) if eta > 0."""
        x0, eps = self.predict(model_out, t, x)
        if self.cfg.clip_sample:
            r = float(self.cfg.clip_sample_range)
            x0 = x0.clip(-r, r)
        a_prev = self.alpha_bar(t_prev)
        std = float(eta) * self.variance(t, t_prev) ** 0.5
        out = a_prev**0.5 * x0 + max(1.0 - a_prev - std**2, 0.0) ** 0.5 * eps
        if eta > 0:
            if noise is None:
                raise ValueError("DDIM step with eta > 0 needs noise")
            out = out + std * noise
        return out

    def add_noise(self, x0: A, noise: A, t: int) -> A:
        """Forward process q(x_t | x_0): sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        a = self.alpha_bar(t)
        return a**0.5 * x0 + (1.0 - a) ** 0.5 * noise

    # --- the loop ---------------------------------------------------------------------------
    def run(
        self,
        model_fn: Callable[[A, int], A],
        x: A,
        pairs: list[tuple[int, int]],
        *,
        eta: float = 0.0,
        randn: Callable[[], A] | None = None,
        prefix: A | None = None,
        prefix_mask: Any = None,
        prefix_noise: A | None = None,
        prefix_mode: str = "replace",
    ) -> A:
        """Run the DDIM steps in `pairs` from `x` (already at the noise level of pairs[0][0]).

        Prefix inpainting: `prefix` is broadcastable to x ([N or 1, H, J], zeros past the committed
        rows) and `prefix_mask` is 1 on committed rows and 0 elsewhere ([1, H, 1]).
        "replace": before every network call the committed rows of x are overwritten with the
        prefix noised to the current level with `prefix_noise` (the chain's own initial noise, so
        an eta = 0 chain stays deterministic). "x0": the network's clean-sample estimate has its
        committed rows replaced and the output re-derived from it. Either way the committed rows
        are set exactly at the end. `randn()` supplies fresh noise for eta > 0.
        """
        if prefix_mode not in PREFIX_MODES:
            raise ValueError(
                f"prefix_mode must be one of {list(PREFIX_MODES)}, got {prefix_mode!r}"
            )
        if eta > 0 and randn is None:
            raise ValueError("eta > 0 needs a noise source (randn)")
        use_prefix = prefix is not None
        if use_prefix:
            if prefix_mask is None:
                raise ValueError("prefix needs prefix_mask")
            keep = 1.0 - prefix_mask
            if prefix_mode == "replace" and prefix_noise is None:
                raise ValueError("prefix_mode 'replace' needs prefix_noise")
        for t, t_prev in pairs:
            if use_prefix and prefix_mode == "replace":
                x = x * keep + self.add_noise(prefix, prefix_noise, t) * prefix_mask
            out = model_fn(x, t)
            if use_prefix and prefix_mode == "x0":
                x0, _ = self.predict(out, t, x)
                out = self.output_for(x0 * keep + prefix * prefix_mask, t, x)
            noise = randn() if eta > 0 and randn is not None else None
            x = self.step(out, t, t_prev, x, eta, noise)
        if use_prefix:
            x = x * keep + prefix * prefix_mask
        return x
