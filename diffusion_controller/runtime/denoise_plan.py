"""The DDIM plan of one inference: timesteps, coefficients and every random draw, made in numpy.

Kept apart from backend.py (the PolicyBackend call: checks, pixels, normalisation, medoid) because
this is what makes backends agree: the plan is computed once here and each backend only runs its
networks along it, so every backend given the same seed and inputs computes the same chunk, and
the exported graphs take the schedule columns below as inputs (runtime/onnx_export.py).
No torch import, like backend.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.policy.ddim import DDIMCore
from diffusion_controller.policy.normalize import Normalizer

# Columns of DenoisePlan.schedule, one row per DDIM step (see DenoisePlan).
SCHEDULE_COLUMNS = ("t", "sqrt_a", "sqrt_1ma", "sqrt_a_prev", "c_eps", "sigma")


@dataclass
class DenoisePlan:
    """Everything one diffusion inference needs, normalised, float32, batch K = num_samples.

    schedule [S, 6]: per step (t, sqrt(a_t), sqrt(1 - a_t), sqrt(a_prev), c_eps, sigma) with
    c_eps = sqrt(max(1 - a_prev - sigma^2, 0)) and sigma = eta * sqrt(DDIM variance), so a step is
    x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t) (for epsilon prediction), clipped, then
    x <- sqrt(a_prev) x0 + c_eps eps + sigma * step_noise[i].
    x_init [K, H, J]: the start (pure noise, or the warm start re-noised to the first t).
    x_noise [K, H, J]: the chain's initial noise; the prefix is re-noised with it before each step.
    prefix [1, H, J] (zeros past the committed rows) and prefix_mask [1, H, 1] (1 on them).
    """

    pairs: list[tuple[int, int]]
    schedule: np.ndarray
    x_init: np.ndarray
    x_noise: np.ndarray
    step_noise: np.ndarray
    prefix: np.ndarray
    prefix_mask: np.ndarray
    prefix_len: int
    eta: float
    steps: int  # the requested step count (len(pairs) may be smaller with a warm start)
    warm_start: np.ndarray | None = None  # [1, H, J] normalised, for the torch reference
    warm_start_strength: float | None = None
    torch_seed: int = 0  # seeds the torch reference's own per-step noise when eta > 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.x_init.shape[0])


def as_float_array(name: str, value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """`value` as finite float64 (of `shape` if given), else ValueError naming `name`."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and other junk
        raise ValueError(f"{name}: not an array ({exc})") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a float array, got dtype {arr.dtype}")
    if shape is not None and arr.shape != shape:
        want = "[" + ", ".join(str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(arr.shape)}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def build_plan(
    cfg: PolicyConfig,
    core: DDIMCore,
    actions: Normalizer,
    *,
    k: int,
    steps: int | None = None,
    eta: float | None = None,
    warm_start: np.ndarray | None = None,
    warm_start_strength: float | None = None,
    prefix: np.ndarray | None = None,
    seed: int | None = None,
    noise: np.ndarray | None = None,
) -> DenoisePlan:
    """The plan for `k` samples (checked by the caller), in the model's normalised units.

    `actions` is the model's action normaliser. Random draws come from numpy's PCG64 seeded with
    `seed`: the initial noise [K, H, J] first (unless `noise` is given), then [S, K, H, J]
    per-step noise when eta > 0. Bad options raise ValueError naming them.
    """
    h, j = cfg.horizon, cfg.action_dim
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    eta_v = cfg.diffusion.eta if eta is None else eta
    if (
        isinstance(eta_v, bool)
        or not isinstance(eta_v, (int, float, np.floating))
        or not (0.0 <= float(eta_v) <= 1.0)
    ):
        raise ValueError(f"eta must be a number in [0, 1], got {eta_v!r}")
    eta_v = float(eta_v)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    strength = None
    ws_n = None
    if warm_start is not None:
        ws = as_float_array("warm_start", warm_start, (h, j))
        strength = 0.5 if warm_start_strength is None else warm_start_strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating)):
            raise ValueError(f"warm_start_strength must be a number, got {strength!r}")
        ws_n = actions.normalize(ws).astype(np.float32)[None]
    elif warm_start_strength is not None:
        raise ValueError("warm_start_strength was given without a warm_start")
    pairs = core.plan(steps, strength)  # validates steps and strength
    n_steps = core.resolve_steps(steps)

    rng = np.random.default_rng(seed)
    if noise is not None:
        nz = as_float_array("noise", noise)
        if nz.shape == (h, j):
            nz = nz[None]
        if nz.shape != (k, h, j):
            raise ValueError(
                f"noise must be [{k}, {h}, {j}] (or [{h}, {j}] for one sample), "
                f"got {list(nz.shape)}"
            )
        x_noise = nz.astype(np.float32)
    else:
        x_noise = rng.standard_normal((k, h, j), dtype=np.float32)
    s = len(pairs)
    step_noise = (
        rng.standard_normal((s, k, h, j), dtype=np.float32)
        if eta_v > 0
        else np.zeros((s, k, h, j), dtype=np.float32)
    )
    torch_seed = int(rng.integers(0, 2**62))

    sched = np.zeros((s, len(SCHEDULE_COLUMNS)), dtype=np.float64)
    for i, (t, t_prev) in enumerate(pairs):
        a, a_prev = core.alpha_bar(t), core.alpha_bar(t_prev)
        sigma = eta_v * core.variance(t, t_prev) ** 0.5
        sched[i] = (
            t,
            a**0.5,
            (1.0 - a) ** 0.5,
            a_prev**0.5,
            max(1.0 - a_prev - sigma**2, 0.0) ** 0.5,
            sigma,
        )
    if ws_n is not None:
        x_init = core.add_noise(ws_n, x_noise, pairs[0][0]).astype(np.float32)
    else:
        x_init = x_noise.copy()

    prefix_full = np.zeros((1, h, j), dtype=np.float32)
    mask = np.zeros((1, h, 1), dtype=np.float32)
    n_prefix = 0
    if prefix is not None:
        p = as_float_array("prefix", prefix)
        if p.ndim != 2 or p.shape[1] != j or not 1 <= p.shape[0] <= h:
            raise ValueError(f"prefix must be [k in 1..{h}, {j}], got {list(p.shape)}")
        n_prefix = int(p.shape[0])
        prefix_full[0, :n_prefix] = actions.normalize(p)
        mask[0, :n_prefix] = 1.0
    return DenoisePlan(
        pairs=pairs,
        schedule=sched.astype(np.float32),
        x_init=np.ascontiguousarray(x_init),
        x_noise=x_noise,
        step_noise=step_noise,
        prefix=prefix_full,
        prefix_mask=mask,
        prefix_len=n_prefix,
        eta=eta_v,
        steps=n_steps,
        warm_start=ws_n,
        warm_start_strength=None if strength is None else float(strength),
        torch_seed=torch_seed,
    )
