"""Image encoder: ResNet-style CNN with GroupNorm and a spatial-softmax keypoint head.

Following Chi et al. 2023: BatchNorm is replaced by GroupNorm because the EMA weights used at
inference interact badly with batch statistics, and global average pooling is replaced by a
spatial softmax so the feature keeps *where* things are (the target, the obstacle, the gripper).
The ImageNet normalisation lives inside the module, so callers feed plain [0, 1] RGB.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion_controller.policy.config import EncoderConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual path (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups_of: EncoderConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups_of.num_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups_of.num_groups(c_out), c_out)
        self.act = nn.ReLU(inplace=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.GroupNorm(groups_of.num_groups(c_out), c_out),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """Per-keypoint softmax over the feature map -> expected (x, y) in [-1, 1]: [B, 2K]."""

    def __init__(self, channels: int, height: int, width: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints
        ys, xs = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij"
        )
        # [H*W, 2] coordinate table; not learned and not saved (derived from the config).
        self.register_buffer(
            "coords", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1), persistent=False
        )

    def forward(self, feat: Tensor) -> Tensor:
        b = feat.shape[0]
        logits = self.proj(feat).flatten(2)  # [B, K, H*W]
        attn = torch.softmax(logits, dim=-1)
        points = attn @ self.coords  # [B, K, 2]
        return points.reshape(b, 2 * self.num_keypoints)


class ImageEncoder(nn.Module):
    """[B, 3, H, W] float RGB in [0, 1] -> [B, feature_dim]."""

    def __init__(self, cfg: EncoderConfig, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        widths = [w * m for m in cfg.stage_multipliers()]
        if cfg.variant == "resnet18":
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False),
                nn.GroupNorm(cfg.num_groups(w), w),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
            blocks_per_stage, strides = [2, 2, 2, 2], [1, 2, 2, 2]
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(cfg.num_groups(w), w),
                nn.ReLU(),
            )
            blocks_per_stage, strides = [1, 1, 1], [1, 2, 2]
        layers: list[nn.Module] = []
        c_in = w
        for c_out, n_blocks, stride in zip(widths, blocks_per_stage, strides, strict=True):
            for i in range(n_blocks):
                layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1, cfg))
                c_in = c_out
        self.body = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            fh, fw = self.body(self.stem(torch.zeros(1, 3, *image_size))).shape[-2:]
        self.feature_map_size = (int(fh), int(fw))
        self.pool = SpatialSoftmax(c_in, int(fh), int(fw), cfg.num_keypoints)
        self.out = nn.Linear(2 * cfg.num_keypoints, cfg.feature_dim)

    def forward(self, images: Tensor) -> Tensor:
        x = (images - self.mean) / self.std
        return self.out(self.pool(self.body(self.stem(x))))
