"""The reference backend: the trained torch network and policy's own DDIMSampler.

Every other backend is tested against this one. It takes the initial noise from the shared
`DenoisePlan`, so for eta = 0 (the deployed setting) it and the exported graphs compute the same
chunk from the same seed. With eta > 0 the sampler draws its per-step noise from a torch generator
seeded from the plan: same distribution as the graph backends, not the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from diffusion_controller.policy.artifact import load_artifact
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.normalize import Normalizer
from diffusion_controller.policy.sampler import DDIMSampler
from diffusion_controller.runtime.backend import PolicyBackend
from diffusion_controller.runtime.denoise_plan import DenoisePlan


class TorchBackend(PolicyBackend):
    name = "torch"

    def __init__(self, net: torch.nn.Module, config: PolicyConfig,
                 normalizers: Mapping[str, Normalizer], meta: Mapping[str, Any] | None = None,
                 model_dir: str | None = None, device: str = "cpu", fp16: bool = False,
                 threads: int | None = None) -> None:
        super().__init__(config, normalizers, meta, model_dir)
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("torch backend: device 'cuda' requested but CUDA is not available")
        if fp16 and dev.type != "cuda":
            raise ValueError("torch backend: fp16 needs device 'cuda'")
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.dtype = torch.float16 if fp16 else torch.float32
        self.net = net.to(device=dev, dtype=self.dtype).eval()
        self.device = str(dev)
        self.precision = "fp16" if fp16 else "fp32"
        self.sampler = DDIMSampler(config.diffusion)

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], device: str = "cpu", fp16: bool = False,
             threads: int | None = None) -> TorchBackend:
        art = load_artifact(model_dir, device="cpu")
        return cls(art.net, art.config, art.normalizers, art.meta, art.path, device=device,
                   fp16=fp16, threads=threads)

    def _t(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device, self.dtype)

    @torch.inference_mode()
    def _encode(self, images: np.ndarray, joints: np.ndarray) -> torch.Tensor:
        return self.net.encode(self._t(images), self._t(joints))

    @torch.inference_mode()
    def _denoise(self, cond: torch.Tensor, plan: DenoisePlan) -> np.ndarray:
        gen = None
        if plan.eta > 0:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(plan.torch_seed)
        prefix = None
        if plan.prefix_len > 0:
            prefix = self._t(plan.prefix[:, : plan.prefix_len])
        x = self.sampler.sample(
            self.net, cond, steps=plan.steps, eta=plan.eta, noise=self._t(plan.x_noise),
            generator=gen,
            warm_start=None if plan.warm_start is None else self._t(plan.warm_start),
            warm_start_strength=0.5 if plan.warm_start_strength is None
            else plan.warm_start_strength,
            prefix=prefix, num_samples=plan.num_samples,
        )
        return x.float().cpu().numpy()

    @torch.inference_mode()
    def _regress(self, cond: torch.Tensor) -> np.ndarray:
        return self.net(cond).float().cpu().numpy()
