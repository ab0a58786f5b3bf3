"""Camera pixels to model pixels, in numpy only: the node and the dataset share these functions.

Training and deployment must see identical pixels, so there is exactly one colour conversion and
one resize, with no OpenCV dependency. Resizing is separable: each axis is a small weight matrix
(area averaging when shrinking, bilinear with half-pixel centres when enlarging), applied with two
matrix products, which handles any size ratio and takes a few milliseconds for 640x480 -> 96x96.
The colour conversion and the resize live in data/pixels.py (recordings are read with them too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# the encodings, colour conversion and resize: re-exported for this module's importers
from diffusion_controller.data.pixels import (  # noqa: F401
    AMBIGUOUS_8UC3,
    CHANNELS,
    DEPTH_OR_WIDE,
    ORDERS_8UC3,
    SUPPORTED_ENCODINGS,
    YUV422_ENCODINGS,
    resize_image,
    resolve_encoding,
    to_rgb,
    unsupported_reason,
    yuv422_to_rgb,
)


def prepare_image(image: np.ndarray, encoding: str, size: Sequence[int]) -> np.ndarray:
    """A camera message's pixels -> uint8 RGB at model size: what the node and the dataset store."""
    return resize_image(to_rgb(image, encoding), size)


def frames_to_chw_float(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [0, 1]: the encoder's input layout."""
    arr = np.asarray(frames)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected [..., H, W, 3] frames, got shape {arr.shape}")
    moved = np.moveaxis(arr, -1, -3)
    if arr.dtype == np.uint8:
        return moved.astype(np.float32) * np.float32(1.0 / 255.0)
    return moved.astype(np.float32)


def observation_images(images: dict[str, np.ndarray], cameras: Sequence[str]) -> np.ndarray:
    """{cam: uint8 [To, H, W, 3]} -> float32 [To, Ncam, 3, H, W] in the config's camera order."""
    missing = [c for c in cameras if c not in images]
    if missing:
        raise ValueError(f"observation has no images for cameras {missing} (has {sorted(images)})")
    stacked = np.stack([np.asarray(images[c]) for c in cameras], axis=1)  # [To, Ncam, H, W, 3]
    return frames_to_chw_float(stacked)
