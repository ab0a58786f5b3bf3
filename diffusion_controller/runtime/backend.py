"""One inference interface for every backend (torch, onnxruntime, TensorRT).

The backend owns everything between an observation and an absolute action chunk: input checks,
pixel layout, joint normalisation, the random draws, the DDIM schedule, and unnormalisation. A
backend subclass only runs networks: `_encode` (once per inference), then either `_denoise` (the
whole DDIM loop, driven by a `DenoisePlan` computed here in numpy) or `_regress`. Because the plan
(timesteps, coefficients, noise) is made in one place, every backend given the same seed and
inputs computes the same chunk, and the torch reference can be compared number for number. The
plan and its DenoisePlan are in runtime/denoise_plan.py.

No torch import at module level: a Jetson running onnxruntime or TensorRT need not have torch.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.ddim import DDIMCore
from diffusion_controller.policy.normalize import Normalizer
from diffusion_controller.policy.preprocess import observation_images
from diffusion_controller.runtime.denoise_plan import DenoisePlan, as_float_array, build_plan

log = logging.getLogger(__name__)

MAX_SAMPLES = 64


class InferenceError(RuntimeError):
    """The network produced something unusable (NaN/Inf): the caller must not execute it."""


@dataclass
class Observation:
    """What the policy sees at stamp t0 (the newest frame's time), newest frame last.

    images: {camera: uint8 [To, H, W, 3]} at the model's image size; joints: [To, J] in the
    model's joint order (radians); stamp: t0 in seconds.
    """

    images: dict[str, np.ndarray]
    joints: np.ndarray
    stamp: float


@dataclass
class InferenceResult:
    """actions[k] is the absolute joint target for stamp + k * action_dt (float64 [H, J]).

    samples: all K chunks [K, H, J] when num_samples > 1 (actions is then their medoid), else None.
    spread: max over steps and joints of the std across samples of the first n_action_steps
    actions (radians), a cheap uncertainty signal; None for one sample.
    """

    actions: np.ndarray
    samples: np.ndarray | None
    spread: float | None
    timings_ms: dict[str, float]
    stamp: float = 0.0
    steps: int = 0  # DDIM steps actually run (fewer with a warm start; 0 for regression)
    backend: str = ""


class PolicyBackend(ABC):
    """Runs one policy artifact. Subclasses implement `_encode`, `_denoise`, `_regress`."""

    name = "abstract"

    def __init__(
        self,
        config: PolicyConfig,
        normalizers: Mapping[str, Normalizer],
        meta: Mapping[str, Any] | None = None,
        model_dir: str | None = None,
    ) -> None:
        self._config = config
        self.normalizers = dict(normalizers)
        self.meta = dict(meta or {})
        self.model_dir = model_dir
        self.core = DDIMCore(config.diffusion)
        self.device = "cpu"
        self.precision = "fp32"
        # Wall time of this backend's first inference (ms), warm-up included: the one-off cost
        # of allocations, kernel choices and shape setup that warm-up exists to take off the loop.
        self.first_inference_ms: float | None = None
        self.max_samples = MAX_SAMPLES  # the most samples one inference takes (engines: fewer)

    @property
    def config(self) -> PolicyConfig:
        return self._config

    @property
    def kind(self) -> str:
        return self._config.kind

    # --- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def _encode(self, images: np.ndarray, joints: np.ndarray) -> Any:
        """images float32 [1, To, Ncam, 3, H, W] in [0, 1], joints float32 [1, To, J] normalised
        -> the condition, in whatever form `_denoise` / `_regress` take it."""

    def _denoise(self, cond: Any, plan: DenoisePlan) -> np.ndarray:
        """Run the plan; return normalised chunks float32 [K, H, J]."""
        raise TypeError(f"{self.name} backend cannot run a diffusion policy")

    def _regress(self, cond: Any) -> np.ndarray:
        """Regression head; return a normalised chunk float32 [1, H, J]."""
        raise TypeError(f"{self.name} backend cannot run a regression policy")

    # --- the public call ---------------------------------------------------------------------
    def infer(
        self,
        obs: Observation,
        *,
        steps: int | None = None,
        eta: float | None = None,
        warm_start: np.ndarray | None = None,
        warm_start_strength: float | None = None,
        prefix: np.ndarray | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        noise: np.ndarray | None = None,
    ) -> InferenceResult:
        """One action chunk for `obs` (see the module docstring for what each option does).

        warm_start: previous chunk re-timed onto this grid, absolute [H, J]; warm_start_strength
        (0, 1] chooses how many of the steps run (default 0.5). prefix: committed first actions,
        absolute [k, J]; they come back exactly. noise: the initial noise, [K, H, J] or [H, J].
        For the regression kind only `prefix` applies (it overwrites the first rows).
        Raises ValueError on bad input and InferenceError if the network output is not finite.
        """
        t_start = time.perf_counter()
        cfg = self._config
        h, j = cfg.horizon, cfg.action_dim
        joints = self.check_observation(obs)
        self.check_num_samples(num_samples)
        prefix_abs = None
        if prefix is not None:
            prefix_abs = as_float_array("prefix", prefix)
            if prefix_abs.ndim != 2 or prefix_abs.shape[1] != j or prefix_abs.shape[0] > h:
                raise ValueError(f"prefix must be [k <= {h}, {j}], got {list(prefix_abs.shape)}")
            if prefix_abs.shape[0] == 0:
                prefix_abs = None
        images = observation_images(obs.images, cfg.cameras)[None]
        joints_n = self.normalizers["joints"].normalize(joints).astype(np.float32)[None]
        t_pre = time.perf_counter()
        cond = self._encode(images, joints_n)
        t_enc = time.perf_counter()
        # Planned for both kinds so that bad options are rejected alike (regression ignores them).
        plan = self.make_plan(
            steps=steps,
            eta=eta,
            warm_start=warm_start,
            warm_start_strength=warm_start_strength,
            prefix=prefix_abs,
            num_samples=num_samples,
            seed=seed,
            noise=noise,
        )
        x = self._denoise(cond, plan) if cfg.kind == "diffusion" else self._regress(cond)
        t_den = time.perf_counter()
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise InferenceError(f"{self.name} backend produced NaN or Inf actions")
        if cfg.kind != "diffusion":
            # The sampler clips to the demonstrations' range; a regression head is unbounded, and
            # on pick_place it drove joints 2 and 6 more than 1 rad below that range.
            x = np.clip(x, -1.0, 1.0)
        chunks = self.normalizers["actions"].unnormalize(x)
        if prefix_abs is not None:
            chunks[:, : prefix_abs.shape[0]] = prefix_abs  # committed actions come back bit-exact
        samples = spread = None
        actions = chunks[0]
        if chunks.shape[0] > 1:
            samples = chunks
            n = min(cfg.n_action_steps, h)
            spread = float(np.max(np.std(chunks[:, :n], axis=0)))
            actions = chunks[_medoid(chunks[:, :n])]
        t_end = time.perf_counter()
        if self.first_inference_ms is None:
            self.first_inference_ms = 1e3 * (t_end - t_start)
        timings = {
            "preprocess": 1e3 * (t_pre - t_start),
            "encode": 1e3 * (t_enc - t_pre),
            "denoise": 1e3 * (t_den - t_enc),
            "total": 1e3 * (t_end - t_start),
        }
        return InferenceResult(
            actions=np.ascontiguousarray(actions),
            samples=samples,
            spread=spread,
            timings_ms=timings,
            stamp=float(obs.stamp),
            steps=len(plan.pairs) if cfg.kind == "diffusion" else 0,
            backend=self.name,
        )

    def warmup(self, n: int = 3, steps: int | None = None, num_samples: int = 1) -> None:
        """Run `n` inferences on random inputs so allocations and kernel choices happen now, at
        the batch the loop will run (`num_samples`): a warm-up at another shape leaves the real
        shape's setup to the first real inference."""
        rng = np.random.default_rng(0)
        for _ in range(max(0, int(n))):
            self.infer(self.random_observation(rng), steps=steps, seed=0, num_samples=num_samples)

    def check_num_samples(self, num_samples: int) -> int:
        """`num_samples` if this backend can run it, else ValueError saying why (set time)."""
        k = self._check_num_samples(num_samples)
        if k > self.max_samples:
            raise ValueError(
                f"num_samples {k} exceeds the {self.max_samples} this {self.name} "
                f"backend was built for (its engine's optimisation profile)"
            )
        return k

    def status(self) -> dict[str, Any]:
        """What /diagnostics reports about the backend."""
        first = self.first_inference_ms
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "max_samples": self.max_samples,
            "first_inference_ms": round(first, 2) if first is not None else -1.0,
        }

    # --- helpers shared by every backend ------------------------------------------------------
    def random_observation(self, rng: np.random.Generator, stamp: float = 0.0) -> Observation:
        """A plausible observation (random pixels, joints inside the training range)."""
        cfg = self._config
        hh, ww = cfg.image_size
        images = {
            c: rng.integers(0, 256, (cfg.n_obs_steps, hh, ww, 3), dtype=np.uint8)
            for c in cfg.cameras
        }
        norm = self.normalizers["joints"]
        u = rng.uniform(-1.0, 1.0, (cfg.n_obs_steps, cfg.action_dim))
        return Observation(images=images, joints=norm.unnormalize(u), stamp=stamp)

    def check_observation(self, obs: Observation) -> np.ndarray:
        """Validate `obs` against the config; returns joints as float64 [To, J]."""
        cfg = self._config
        if not isinstance(obs, Observation):
            raise ValueError(f"expected an Observation, got {type(obs).__name__}")
        to, (hh, ww), j = cfg.n_obs_steps, cfg.image_size, cfg.action_dim
        if not isinstance(obs.stamp, (int, float, np.floating, np.integer)) or not math.isfinite(
            float(obs.stamp)
        ):
            raise ValueError(f"observation stamp must be a finite number, got {obs.stamp!r}")
        if not isinstance(obs.images, Mapping):
            raise ValueError("observation images must be a {camera: array} mapping")
        missing = [c for c in cfg.cameras if c not in obs.images]
        unknown = sorted(set(obs.images) - set(cfg.cameras))
        if missing or unknown:
            raise ValueError(
                f"observation cameras {sorted(obs.images)} do not match the model's "
                f"{list(cfg.cameras)} (missing {missing}, unknown {unknown})"
            )
        for cam in cfg.cameras:
            img = np.asarray(obs.images[cam])
            if img.dtype != np.uint8:
                raise ValueError(f"image {cam!r} must be uint8, got {img.dtype}")
            if img.shape != (to, hh, ww, 3):
                raise ValueError(
                    f"image {cam!r} must be [To={to}, {hh}, {ww}, 3] (model size), "
                    f"got {list(img.shape)}"
                )
        return as_float_array("joints", obs.joints, (to, j))

    @staticmethod
    def _check_num_samples(num_samples: int) -> int:
        if (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, (int, np.integer))
            or not (1 <= int(num_samples) <= MAX_SAMPLES)
        ):
            raise ValueError(
                f"num_samples must be an integer in 1..{MAX_SAMPLES}, got {num_samples!r}"
            )
        return int(num_samples)

    def make_plan(
        self,
        *,
        steps: int | None = None,
        eta: float | None = None,
        warm_start: np.ndarray | None = None,
        warm_start_strength: float | None = None,
        prefix: np.ndarray | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        noise: np.ndarray | None = None,
    ) -> DenoisePlan:
        """The DDIM plan for one inference, in the model's normalised units (see DenoisePlan).

        Random draws come from numpy's PCG64 seeded with `seed`: the initial noise [K, H, J]
        first (unless `noise` is given), then [S, K, H, J] per-step noise when eta > 0
        (runtime/denoise_plan.py).
        """
        k = self._check_num_samples(num_samples)
        return build_plan(
            self._config,
            self.core,
            self.normalizers["actions"],
            k=k,
            steps=steps,
            eta=eta,
            warm_start=warm_start,
            warm_start_strength=warm_start_strength,
            prefix=prefix,
            seed=seed,
            noise=noise,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "kind": self.kind,
            "model_dir": self.model_dir,
        }


def _medoid(chunks: np.ndarray) -> int:
    """Index of the chunk with the smallest summed distance to the others: a sample the policy
    actually produced (never an average of modes, which could be a path between two obstacles)."""
    flat = chunks.reshape(chunks.shape[0], -1)
    d = np.sqrt(((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1))
    return int(np.argmin(d.sum(axis=1)))
