"""Image conversions shared by recording, training and the node: camera encodings to RGB,
and resizing.

They live with the data because recordings are converted with them when they are read;
the policy's preprocessing (policy/preprocess.py) builds on the same functions, so the node
and the dataset produce identical pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

# encoding -> (channels, indices of R, G, B)
_ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
    "8UC1": (1, (0, 0, 0)),
    "8UC3": (3, (0, 1, 2)),
}

SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """uint8 [H, W] or [H, W, C] in `encoding` -> uint8 [H, W, 3] RGB (a new, contiguous array)."""
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {list(SUPPORTED_ENCODINGS)}"
        )
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{encoding} image must be uint8, got {arr.dtype}")
    channels, order = _ENCODINGS[encoding]
    if arr.ndim == 2 and channels == 1:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{encoding} image must be [H, W, {channels}], got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, list(order)])


@lru_cache(maxsize=64)
def _axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float32 matrix mapping an axis of n_in pixels to n_out pixels."""
    w = np.zeros((n_out, n_in), dtype=np.float64)
    if n_out <= n_in:
        # Area averaging: output pixel i covers input span [i*s, (i+1)*s) with s = n_in / n_out.
        s = n_in / n_out
        for i in range(n_out):
            a, b = i * s, (i + 1) * s
            j0, j1 = int(np.floor(a)), min(int(np.ceil(b)), n_in)
            for j in range(j0, j1):
                overlap = min(b, j + 1) - max(a, j)
                if overlap > 0:
                    w[i, j] = overlap
        w /= w.sum(axis=1, keepdims=True)
    else:
        # Bilinear with half-pixel centres, clamped at the borders.
        s = n_in / n_out
        for i in range(n_out):
            x = (i + 0.5) * s - 0.5
            x = min(max(x, 0.0), n_in - 1.0)
            j0 = int(np.floor(x))
            j1 = min(j0 + 1, n_in - 1)
            f = x - j0
            w[i, j0] += 1.0 - f
            w[i, j1] += f
    w.setflags(write=False)
    return w.astype(np.float32)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize [H, W, C] (or [H, W]) to `size` = (height, width); uint8 in gives rounded uint8 out.

    Same-size input is returned unchanged (as a copy-free view when possible).
    """
    arr = np.asarray(image)
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"resize_image: size must be (height >= 1, width >= 1), got {size!r}")
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"resize_image: expected [H, W] or [H, W, C], got shape {arr.shape}")
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = arr.shape[:2]
    if (in_h, in_w) == (out_h, out_w):
        return arr
    squeeze = arr.ndim == 2
    src = arr[:, :, None] if squeeze else arr
    c = src.shape[2]
    work = src.astype(np.float32)
    wh = _axis_weights(in_h, out_h)
    ww = _axis_weights(in_w, out_w)
    # Rows first: [out_h, in_h] @ [in_h, in_w * C]
    tmp = (wh @ work.reshape(in_h, in_w * c)).reshape(out_h, in_w, c)
    # Then columns: [out_h, C, in_w] @ [in_w, out_w] -> [out_h, C, out_w]
    out = (tmp.transpose(0, 2, 1) @ ww.T).transpose(0, 2, 1)
    if arr.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        out = out.astype(arr.dtype)
    out = np.ascontiguousarray(out)
    return out[:, :, 0] if squeeze else out
