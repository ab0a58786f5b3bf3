"""The policy networks: observation encoding shared by the diffusion policy and its baseline.

`encode` turns To frames of every camera plus the joint state into one flat condition vector; it
runs once per chunk. The diffusion net then denoises a chunk K times given that vector, while the
regression baseline maps it to a chunk in one pass (and, trained with MSE, averages modes: the
failure diffusion exists to avoid). Both are plain tensor programs with no data-dependent Python
control flow, so they trace and export to ONNX with the timestep as a tensor input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.encoder import ImageEncoder
from diffusion_controller.policy.unet import ConditionalUNet1D


class ObservationEncoder(nn.Module):
    """images [B, To, Ncam, 3, H, W] in [0, 1] + joints [B, To, J] normalised -> [B, cond_dim]."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # One encoder per camera (views differ too much to share weights well), run on every frame.
        self.cameras = nn.ModuleList(
            [ImageEncoder(cfg.encoder, tuple(cfg.image_size)) for _ in cfg.cameras]
        )
        self.n_obs_steps = cfg.n_obs_steps
        self.frame_dim = len(cfg.cameras) * cfg.encoder.feature_dim + cfg.action_dim
        self.cond_dim = cfg.n_obs_steps * self.frame_dim

    def forward(self, images: Tensor, joints: Tensor) -> Tensor:
        b, to = images.shape[0], images.shape[1]
        feats = []
        for i, enc in enumerate(self.cameras):
            frames = images[:, :, i].reshape(b * to, *images.shape[3:])
            feats.append(enc(frames).reshape(b, to, -1))
        feats.append(joints.to(images.dtype))
        return torch.cat(feats, dim=-1).reshape(b, self.cond_dim)


class _PolicyNet(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_encoder = ObservationEncoder(cfg)
        self.cond_dim = self.obs_encoder.cond_dim
        self.horizon = cfg.horizon
        self.action_dim = cfg.action_dim

    def encode(self, images: Tensor, joints: Tensor) -> Tensor:
        """images [B, To, Ncam, 3, H, W] float in [0, 1]; joints [B, To, J] normalised."""
        return self.obs_encoder(images, joints)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class DiffusionPolicyNet(_PolicyNet):
    """forward(noisy chunk [B, H, J], timestep [B], cond [B, cond_dim]) -> network output [B, H, J]
    (noise for prediction_type "epsilon")."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__(cfg)
        self.unet = ConditionalUNet1D(cfg.action_dim, self.cond_dim, cfg.unet)

    def forward(self, sample: Tensor, timestep: Tensor, cond: Tensor) -> Tensor:
        return self.unet(sample, timestep, cond)


class RegressionPolicyNet(_PolicyNet):
    """forward(cond [B, cond_dim]) -> normalised chunk [B, H, J], trained with MSE."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__(cfg)
        layers: list[nn.Module] = []
        width = self.cond_dim
        for hidden in cfg.mlp_dims:
            layers += [nn.Linear(width, hidden), nn.Mish()]
            width = hidden
        layers.append(nn.Linear(width, cfg.horizon * cfg.action_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, cond: Tensor) -> Tensor:
        return self.head(cond).reshape(cond.shape[0], self.horizon, self.action_dim)


def build_net(cfg: PolicyConfig) -> DiffusionPolicyNet | RegressionPolicyNet:
    """The network for `cfg.kind`, freshly initialised (seed torch first for reproducibility)."""
    if cfg.kind == "diffusion":
        return DiffusionPolicyNet(cfg)
    if cfg.kind == "regression":
        return RegressionPolicyNet(cfg)
    raise ValueError(f"unknown policy kind {cfg.kind!r}")
