"""A randomly initialised policy artifact, so benchmarks and tests run before a model is trained.

The weights are random but the artifact is a real one (save_artifact / load_artifact), with
Panda-like joint names and ranges, so every backend and the export path see exactly what they
would see with a trained model of the same size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from diffusion_controller.settings.panda import PANDA_JOINT_NAMES

PANDA_JOINTS = list(PANDA_JOINT_NAMES)  # the joint_names setting's default
# Panda joint limits (rad), used as the normalisation range of the random model.
PANDA_LOWER = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
PANDA_UPPER = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]


def make_random_artifact(out_dir: str | os.PathLike[str], kind: str = "diffusion",
                         preset: str = "cpu", seed: int = 0, **overrides: Any) -> str:
    """Write a random `preset` ("cpu" = PolicyConfig.cpu_default, "paper") model of `kind` into
    `out_dir`; returns the directory. `overrides` go to the preset (e.g. image_size=(32, 32),
    gripper=GripperConfig() for a Panda hand's width after the 7 joints)."""
    import torch

    from diffusion_controller.policy.artifact import save_artifact
    from diffusion_controller.policy.config import PolicyConfig
    from diffusion_controller.policy.model import build_net
    from diffusion_controller.policy.normalize import Normalizer

    if preset == "cpu":
        cfg = PolicyConfig.cpu_default(PANDA_JOINTS, kind=kind, **overrides)
    elif preset == "paper":
        cfg = PolicyConfig.paper(PANDA_JOINTS, kind=kind, **overrides)
    else:
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
    torch.manual_seed(seed)
    net = build_net(cfg)
    lo, hi = np.asarray(PANDA_LOWER), np.asarray(PANDA_UPPER)
    if cfg.gripper is not None:  # the Panda hand: 0..0.04 m a finger, 0..0.08 m wide
        top = 0.08 if cfg.gripper.mapping == "width" else 0.04
        lo = np.concatenate([lo, np.zeros(cfg.gripper_dim)])
        hi = np.concatenate([hi, np.full(cfg.gripper_dim, top)])
    norms = {"joints": Normalizer(lo, hi), "actions": Normalizer(lo, hi)}
    save_artifact(out_dir, net, cfg, norms, card="Randomly initialised (benchmark / tests only).",
                  extra_meta={"random_init": True, "seed": seed})
    return os.fspath(out_dir)
