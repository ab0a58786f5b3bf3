"""Camera messages from a recording -> uint8 RGB arrays.

sensor_msgs/Image is unpacked row by row (padding in `step` dropped) and converted with the same
`to_rgb` the node uses (passed in by the caller, so this module imports nothing from policy/);
sensor_msgs/CompressedImage (jpeg or png, what image_transport's `compressed` plugin records) is
decoded with Pillow, which identifies the codec from the bytes themselves.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffusion_controller.data.pixels import CHANNELS

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)

ToRgb = Callable[[np.ndarray, str], np.ndarray]
Resize = Callable[[np.ndarray, Sequence[int]], np.ndarray]


def raw_pixels(msg: Any, topic: str, to_rgb: ToRgb) -> np.ndarray:
    """sensor_msgs/Image -> RGB [H, W, 3]; ValueError naming the topic when it is corrupt."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0 or step < w or data.size < h * step:
        raise ValueError(
            f"{topic}: image of {h}x{w} with step {step} carries {data.size} bytes (corrupt)"
        )
    rows = data[: h * step].reshape(h, step)
    channels = CHANNELS.get(msg.encoding, step // w)
    if w * channels > step:
        raise ValueError(f"{topic}: {msg.encoding} image of width {w} cannot fit in step {step}")
    pixels = rows[:, : w * channels].reshape(h, w, channels) if channels > 1 else rows[:, :w]
    return to_rgb(pixels, msg.encoding)


def compressed_pixels(msg: Any, topic: str) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB [H, W, 3]."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ValueError(
            f"{topic} carries CompressedImage, which needs Pillow to decode (pip install pillow)"
        ) from exc
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    if not data:
        raise ValueError(f"{topic}: compressed image is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # every codec fails with its own exception type
        fmt = str(getattr(msg, "format", "")) or "unknown format"
        raise ValueError(f"{topic}: cannot decode compressed image ({fmt}): {exc}") from exc


def decode(
    msg: Any,
    msgtype: str,
    topic: str,
    to_rgb: ToRgb,
    resize: Resize,
    image_size: Sequence[int] | None,
) -> np.ndarray:
    """Either camera message type -> RGB, resized to `image_size` (H, W) when given."""
    rgb = compressed_pixels(msg, topic) if msgtype == COMPRESSED else raw_pixels(msg, topic, to_rgb)
    if image_size is not None:
        rgb = resize(rgb, (int(image_size[0]), int(image_size[1])))
    return rgb


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """RGB [H, W, 3] -> jpeg or png bytes, as a camera driver's compressed transport sends them."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality))
    elif fmt == "png":
        img.save(buf, format="PNG")
    else:
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    return buf.getvalue()
