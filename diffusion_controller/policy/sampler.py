"""DDIM sampling of action chunks with torch: few steps, warm start, prefix inpainting, K samples.

The arithmetic is policy/ddim.py's (shared with torch-free backends); this module adds tensors,
random numbers and input checks. Random draws, when not supplied, come from `generator` in this
order: the initial noise [N, H, J] first, then one [N, H, J] draw per step when eta > 0. That is
the order diffusers' DDIMScheduler uses, so a seeded run is reproducible against it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion_controller.policy.config import DiffusionConfig
from diffusion_controller.policy.ddim import PREFIX_MODES, DDIMCore


class DDIMSampler:
    """Samples normalised chunks [N, H, J] from a DiffusionPolicyNet given its condition."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.core = DDIMCore(cfg)

    def timesteps(self, steps: int | None = None) -> Tensor:
        """Descending int64 timesteps for `steps` DDIM steps (config default when None)."""
        return torch.tensor(self.core.timesteps(steps), dtype=torch.long)

    def plan(
        self, steps: int | None = None, warm_start_strength: float | None = None
    ) -> list[tuple[int, int]]:
        return self.core.plan(steps, warm_start_strength)

    def step(
        self,
        eps: Tensor,
        t: int,
        t_prev: int,
        x: Tensor,
        eta: float | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One DDIM update; with eta > 0 and no `noise`, noise is drawn from `generator`."""
        eta_v = self.cfg.eta if eta is None else float(eta)
        if eta_v > 0 and noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.core.step(eps, int(t), int(t_prev), x, eta_v, noise)

    def add_noise(self, x0: Tensor, noise: Tensor, t: int) -> Tensor:
        return self.core.add_noise(x0, noise, int(t))

    @torch.no_grad()
    def sample(
        self,
        net: nn.Module,
        cond: Tensor,
        *,
        steps: int | None = None,
        eta: float | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        warm_start: Tensor | None = None,
        warm_start_strength: float = 0.5,
        prefix: Tensor | None = None,
        prefix_mode: str = "replace",
        num_samples: int = 1,
    ) -> Tensor:
        """Normalised chunks [B * num_samples, H, J], condition-major (rows b*K .. b*K+K-1 for b).

        cond: [B, cond_dim] from `net.encode`. noise: the initial noise [B*K, H, J] (drawn from
        `generator` when None). warm_start: previous chunk on the new time grid, normalised,
        [B or B*K or 1, H, J]: it is re-noised to an intermediate level and only the last
        max(1, round(warm_start_strength * steps)) steps run. prefix: committed first actions
        [B or 1, k, J], honoured exactly (see DDIMCore.run for the modes).
        """
        if cond.ndim != 2:
            raise ValueError(f"cond must be [B, cond_dim], got shape {tuple(cond.shape)}")
        if not bool(torch.isfinite(cond).all()):
            raise ValueError("cond contains NaN or Inf")
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if prefix_mode not in PREFIX_MODES:
            raise ValueError(
                f"prefix_mode must be one of {list(PREFIX_MODES)}, got {prefix_mode!r}"
            )
        k_samples = int(num_samples)
        horizon, dim = int(net.horizon), int(net.action_dim)
        b = int(cond.shape[0])
        n = b * k_samples
        shape = (n, horizon, dim)
        device, dtype = cond.device, cond.dtype
        eta_v = self.cfg.eta if eta is None else float(eta)
        if not 0.0 <= eta_v <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta_v}")

        if k_samples > 1:
            cond = cond.repeat_interleave(k_samples, dim=0)
        if noise is None:
            x_noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        else:
            x_noise = self._check_chunk("noise", noise, shape, (n,), device, dtype)

        pairs = self.core.plan(steps, warm_start_strength if warm_start is not None else None)
        if warm_start is not None:
            ws = self._check_chunk("warm_start", warm_start, shape, (1, b, n), device, dtype)
            if ws.shape[0] == b and k_samples > 1:
                ws = ws.repeat_interleave(k_samples, dim=0)
            x = self.core.add_noise(ws, x_noise, pairs[0][0]).expand(shape).contiguous()
        else:
            x = x_noise

        prefix_full = mask = None
        if prefix is not None:
            prefix_full, mask = self._prefix(prefix, b, k_samples, horizon, dim, device, dtype)

        def model_fn(xt: Tensor, t: int) -> Tensor:
            tt = torch.full((n,), t, dtype=torch.long, device=device)
            return net(xt, tt, cond)

        def randn() -> Tensor:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        return self.core.run(
            model_fn,
            x,
            pairs,
            eta=eta_v,
            randn=randn,
            prefix=prefix_full,
            prefix_mask=mask,
            prefix_noise=x_noise,
            prefix_mode=prefix_mode,
        )

    @staticmethod
    def _check_chunk(
        name: str,
        value: Tensor,
        shape: tuple[int, int, int],
        batch_ok: tuple,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Tensor:
        v = torch.as_tensor(value, device=device, dtype=dtype)
        if v.ndim != 3 or tuple(v.shape[1:]) != shape[1:] or v.shape[0] not in batch_ok:
            raise ValueError(
                f"{name} must be [{' or '.join(map(str, sorted(set(batch_ok))))}, "
                f"{shape[1]}, {shape[2]}], got {tuple(v.shape)}"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        return v

    @staticmethod
    def _prefix(
        prefix: Tensor,
        b: int,
        k_samples: int,
        horizon: int,
        dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        p = torch.as_tensor(prefix, device=device, dtype=dtype)
        if (
            p.ndim != 3
            or p.shape[2] != dim
            or p.shape[0] not in (1, b)
            or not 1 <= p.shape[1] <= horizon
        ):
            raise ValueError(
                f"prefix must be [1 or {b}, k in 1..{horizon}, {dim}], got {tuple(p.shape)}"
            )
        if not bool(torch.isfinite(p).all()):
            raise ValueError("prefix contains NaN or Inf")
        k = int(p.shape[1])
        if p.shape[0] == b and k_samples > 1:
            p = p.repeat_interleave(k_samples, dim=0)
        full = torch.zeros((p.shape[0], horizon, dim), device=device, dtype=dtype)
        full[:, :k] = p
        mask = torch.zeros((1, horizon, 1), device=device, dtype=dtype)
        mask[:, :k] = 1.0
        return full, mask
