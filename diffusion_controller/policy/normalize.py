"""Per-dimension min/max normalisation to [-1, 1], the range the diffusion sampler clips to.

No torch here: the deployment side (onnxruntime / TensorRT) normalises joints and unnormalises
action chunks with the same statistics as training, read from the artifact's config.json.
Because the sampler clips normalised samples to [-1, 1], an action chunk can never leave the range
of positions seen in the demonstrations (plus `margin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# Dimensions whose range is below this are treated as constant (scale 1, centred on the value),
# so normalising never divides by ~0 and unnormalising stays exact.
CONSTANT_RANGE = 1e-6


class Normalizer:
    """Affine map x -> (x - center) / half_range per dimension; the inverse for unnormalise."""

    def __init__(self, low: Any, high: Any) -> None:
        low_a = np.asarray(low, dtype=np.float64).reshape(-1)
        high_a = np.asarray(high, dtype=np.float64).reshape(-1)
        if low_a.shape != high_a.shape or low_a.size == 0:
            raise ValueError(
                f"Normalizer: low and high need the same non-zero size, got "
                f"{low_a.shape} and {high_a.shape}"
            )
        if not (np.all(np.isfinite(low_a)) and np.all(np.isfinite(high_a))):
            raise ValueError("Normalizer: statistics contain NaN or Inf")
        if np.any(low_a > high_a):
            raise ValueError("Normalizer: low must be <= high in every dimension")
        self.low = low_a
        self.high = high_a
        half = (high_a - low_a) / 2.0
        self.constant = half < CONSTANT_RANGE / 2.0
        self.scale = np.where(self.constant, 1.0, half)
        self.center = (high_a + low_a) / 2.0

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    @classmethod
    def fit(cls, data: Any, margin: float = 0.0) -> Normalizer:
        """Statistics of `data` [..., D]; `margin` widens each side by that fraction of range."""
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim == 0 or arr.size == 0:
            raise ValueError("Normalizer.fit: no data")
        arr = arr.reshape(-1, arr.shape[-1])
        if not np.all(np.isfinite(arr)):
            raise ValueError("Normalizer.fit: data contains NaN or Inf")
        if margin < 0 or not np.isfinite(margin):
            raise ValueError(f"Normalizer.fit: margin must be finite and >= 0, got {margin}")
        low, high = arr.min(axis=0), arr.max(axis=0)
        pad = (high - low) * margin
        return cls(low - pad, high + pad)

    def _check(self, x: Any, what: str) -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            raise ValueError(
                f"Normalizer.{what}: last dimension must be {self.dim}, got shape {arr.shape}"
            )
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float32)
        return arr

    def normalize(self, x: Any) -> np.ndarray:
        """[..., D] -> [..., D] in [-1, 1] on the training range (dtype kept if float32/64)."""
        arr = self._check(x, "normalize")
        return ((arr - self.center) / self.scale).astype(arr.dtype, copy=False)

    def unnormalize(self, y: Any) -> np.ndarray:
        arr = self._check(y, "unnormalize")
        return (arr * self.scale + self.center).astype(arr.dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        if not isinstance(data, Mapping) or set(data) != {"low", "high"}:
            raise ValueError(
                f"Normalizer.from_dict: expected keys ['high', 'low'], got "
                f"{sorted(data) if isinstance(data, Mapping) else type(data).__name__}"
            )
        return cls(data["low"], data["high"])

    def __repr__(self) -> str:
        return f"Normalizer(dim={self.dim}, constant={int(self.constant.sum())})"


def normalizers_to_dict(normalizers: Mapping[str, Normalizer]) -> dict[str, Any]:
    return {name: n.to_dict() for name, n in normalizers.items()}


def normalizers_from_dict(data: Mapping[str, Any], dim: int | None = None) -> dict[str, Normalizer]:
    """Read {"joints": ..., "actions": ...}; both are required and must have `dim` entries."""
    if not isinstance(data, Mapping):
        raise ValueError("normalizers: expected a mapping")
    out: dict[str, Normalizer] = {}
    for key in ("joints", "actions"):
        if key not in data:
            raise ValueError(f"normalizers: missing {key!r} statistics")
        out[key] = Normalizer.from_dict(data[key])
        if dim is not None and out[key].dim != dim:
            raise ValueError(f"normalizers: {key!r} has {out[key].dim} dimensions, expected {dim}")
    return out


def fit_normalizers(joints: Any, actions: Any, margin: float = 0.0) -> dict[str, Normalizer]:
    """Joint-state and action statistics from stacked arrays [N, J]."""
    return {"joints": Normalizer.fit(joints, margin), "actions": Normalizer.fit(actions, margin)}
