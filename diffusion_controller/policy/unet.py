"""Conditional 1-D temporal U-Net for action chunks (the CNN variant of Chi et al. 2023).

The chunk [B, H, J] is treated as J channels over H time steps. Every residual block is FiLM-
conditioned on [sinusoidal timestep embedding ; observation feature], which is how the paper lets
one network denoise at every noise level for every observation. Convolutions over time give the
smooth, temporally consistent chunks that make closed-loop execution stable.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from diffusion_controller.policy.config import UNetConfig


class SinusoidalEmbedding(nn.Module):
    """Timestep (int or float) [B] -> [B, dim] with sin and cos at geometric frequencies."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
        )
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        args = t.to(self.freqs.dtype).unsqueeze(-1) * self.freqs
        return torch.cat([args.sin(), args.cos()], dim=-1)


class ConvNormMish(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
            nn.GroupNorm(groups, c_out),
            nn.Mish(),
        )


class FiLMResBlock(nn.Module):
    """conv -> FiLM(scale, shift from the condition) -> conv, plus a residual path."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvNormMish(c_in, c_out, kernel, groups)
        self.conv2 = ConvNormMish(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual: nn.Module = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.c_out = c_out

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(x)
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.conv2(h * scale + shift)
        return h + self.residual(x)


class ConditionalUNet1D(nn.Module):
    """sample [B, H, J], timestep [B] (or scalar), global_cond [B, G] -> [B, H, J]."""

    def __init__(self, action_dim: int, global_cond_dim: int, cfg: UNetConfig) -> None:
        super().__init__()
        e = cfg.step_embed_dim
        self.step_embed = nn.Sequential(
            SinusoidalEmbedding(e), nn.Linear(e, 4 * e), nn.Mish(), nn.Linear(4 * e, e)
        )
        cond_dim = e + global_cond_dim
        k, g = cfg.kernel_size, cfg.n_groups
        dims = [action_dim, *cfg.down_dims]
        levels = list(itertools.pairwise(dims))

        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        FiLMResBlock(c_in, c_out, cond_dim, k, g),
                        FiLMResBlock(c_out, c_out, cond_dim, k, g),
                        nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
                    ]
                )
            )
        mid = cfg.down_dims[-1]
        self.mid = nn.ModuleList(
            [
                FiLMResBlock(mid, mid, cond_dim, k, g),
                FiLMResBlock(mid, mid, cond_dim, k, g),
            ]
        )
        # Up path: one level fewer than down; each concatenates the skip of the same resolution
        # and doubles the length back.
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        FiLMResBlock(2 * c_out, c_in, cond_dim, k, g),
                        FiLMResBlock(c_in, c_in, cond_dim, k, g),
                        nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
                    ]
                )
            )
        start = cfg.down_dims[0]
        self.head = nn.Sequential(ConvNormMish(start, start, k, g), nn.Conv1d(start, action_dim, 1))

    def forward(self, sample: Tensor, timestep: Tensor, global_cond: Tensor) -> Tensor:
        b = sample.shape[0]
        if timestep.ndim == 0:
            timestep = timestep.reshape(1)
        timestep = timestep.expand(b)
        cond = torch.cat([self.step_embed(timestep), global_cond], dim=-1)
        x = sample.transpose(1, 2)  # [B, J, H]
        skips: list[Tensor] = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.head(x).transpose(1, 2)
