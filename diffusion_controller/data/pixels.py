"""Camera pixels to RGB and model size, in numpy only: recordings, training and the node share
these functions (policy/preprocess.py builds on them), so every path produces identical pixels.

Training and deployment must see identical pixels, so there is exactly one colour conversion and
one resize, with no OpenCV dependency. Resizing is separable: each axis is a small weight matrix
(area averaging when shrinking, bilinear with half-pixel centres when enlarging), applied with two
matrix products, which handles any size ratio and takes a few milliseconds for 640x480 -> 96x96.
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
}
# Packed 4:2:2 (two bytes a pixel, a chroma pair shared by two pixels): encoding -> byte order.
# sensor_msgs' "yuv422" is UYVY and "yuv422_yuy2" is YUYV; usb_cam and UVC drivers also use the
# plain "uyvy" / "yuyv" spellings.
YUV422_ENCODINGS: dict[str, str] = {
    "yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv",
}
# 8UC3 says three bytes a pixel and nothing about their order (cv_bridge will not call it colour,
# OpenCV-based drivers fill it BGR): it is read only with an order the user states.
AMBIGUOUS_8UC3 = "8UC3"
ORDERS_8UC3 = ("rgb", "bgr")
# Depth and other wide images: not pictures the policy was trained on, refused with this reason.
DEPTH_OR_WIDE = ("16UC1", "16UC3", "16UC4", "16SC1", "32FC1", "32FC3", "32SC1", "64FC1",
                 "mono16", "rgb16", "bgr16", "rgba16", "bgra16")

SUPPORTED_ENCODINGS = (*_ENCODINGS, *YUV422_ENCODINGS)
CHANNELS: dict[str, int] = {
    **{k: c for k, (c, _) in _ENCODINGS.items()}, **dict.fromkeys(YUV422_ENCODINGS, 2),
    AMBIGUOUS_8UC3: 3,
}


def unsupported_reason(encoding: str) -> str:
    """Why `encoding` is refused, and what to do instead: the one wording node and dataset use."""
    accepted = ", ".join(SUPPORTED_ENCODINGS) + ", 8UC3 (with camera_8uc3_order)"
    if encoding == AMBIGUOUS_8UC3:
        return ("image encoding '8UC3' carries no channel order; set the parameter "
                "camera_8uc3_order to 'rgb' or 'bgr' (OpenCV-based drivers publish BGR), or "
                "publish rgb8/bgr8")
    if encoding in DEPTH_OR_WIDE or "16" in encoding or "32" in encoding or "64" in encoding:
        return (f"image encoding {encoding!r} is a depth or 16/32-bit image, which the policy "
                f"does not take; accepted: {accepted}")
    return f"unsupported image encoding {encoding!r}; accepted: {accepted}"


def resolve_encoding(encoding: str, order_8uc3: str = "") -> str:
    """The encoding to decode with: 8UC3 becomes rgb8/bgr8 when its order is given, else refused."""
    if encoding == AMBIGUOUS_8UC3:
        if order_8uc3 in ORDERS_8UC3:
            return f"{order_8uc3}8"
        raise ValueError(unsupported_reason(encoding))
    return encoding


def yuv422_to_rgb(packed: np.ndarray, order: str) -> np.ndarray:
    """uint8 [H, W, 2] packed 4:2:2 ("uyvy" or "yuyv" byte order) -> uint8 [H, W, 3] RGB.

    BT.601 with video (limited) range, Y in [16, 235] and chroma in [16, 240]: what UVC cameras
    and the OpenCV conversion that cv_bridge uses assume for these formats.
    """
    h, w = packed.shape[:2]
    if w % 2:
        raise ValueError(f"4:2:2 image width must be even, got {w}")
    pairs = packed.reshape(h, w // 2, 4).astype(np.float32)
    if order == "uyvy":
        u, y0, v, y1 = (pairs[..., i] for i in range(4))
    else:
        y0, u, y1, v = (pairs[..., i] for i in range(4))
    y = np.stack([y0, y1], axis=-1).reshape(h, w) - 16.0
    d = np.repeat(u - 128.0, 2, axis=1)
    e = np.repeat(v - 128.0, 2, axis=1)
    yy = 1.164383 * y
    rgb = np.stack([yy + 1.596027 * e, yy - 0.391762 * d - 0.812968 * e, yy + 2.017232 * d], -1)
    return np.clip(np.rint(rgb), 0.0, 255.0).astype(np.uint8)


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """uint8 [H, W] or [H, W, C] in `encoding` -> uint8 [H, W, 3] RGB (a new, contiguous array)."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(unsupported_reason(encoding))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{encoding} image must be uint8, got {arr.dtype}")
    if encoding in YUV422_ENCODINGS:
        if arr.ndim != 3 or arr.shape[2] != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{encoding} image must be [H, W, 2], got shape {arr.shape}")
        return yuv422_to_rgb(arr, YUV422_ENCODINGS[encoding])
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
