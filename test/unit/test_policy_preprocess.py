"""Image preprocessing: encodings to RGB, area/bilinear resizing, the encoder's layout."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.policy.preprocess import (
    frames_to_chw_float,
    observation_images,
    prepare_image,
    resize_image,
    to_rgb,
)

RNG = np.random.default_rng(0)


def test_encodings_give_the_same_rgb() -> None:
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    bgr = rgb[:, :, ::-1].copy()
    alpha = np.full((4, 5, 1), 7, np.uint8)
    np.testing.assert_array_equal(to_rgb(rgb, "rgb8"), rgb)
    np.testing.assert_array_equal(to_rgb(bgr, "bgr8"), rgb)
    np.testing.assert_array_equal(to_rgb(np.concatenate([rgb, alpha], 2), "rgba8"), rgb)
    np.testing.assert_array_equal(to_rgb(np.concatenate([bgr, alpha], 2), "bgra8"), rgb)
    mono = rgb[:, :, 0]
    out = to_rgb(mono, "mono8")
    assert out.shape == (4, 5, 3) and np.all(out == mono[:, :, None])
    assert to_rgb(mono[:, :, None], "mono8").shape == (4, 5, 3)
    assert out.flags.c_contiguous


@pytest.mark.parametrize(
    ("image", "encoding", "match"),
    [
        (np.zeros((4, 5, 3), np.uint8), "nv12", "unsupported"),
        (np.zeros((4, 5, 3), np.float32), "rgb8", "uint8"),
        (np.zeros((4, 5), np.uint8), "rgb8", r"\[H, W, 3\]"),
        (np.zeros((4, 5, 4), np.uint8), "bgr8", r"\[H, W, 3\]"),
        (np.zeros((0, 5, 3), np.uint8), "rgb8", r"\[H, W, 3\]"),
    ],
)
def test_bad_images_raise(image, encoding, match) -> None:
    with pytest.raises(ValueError, match=match):
        to_rgb(image, encoding)


def test_integer_downscale_is_block_mean() -> None:
    img = RNG.integers(0, 256, (8, 12, 3)).astype(np.float32)
    out = resize_image(img, (4, 3))
    expected = img.reshape(4, 2, 3, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_fractional_downscale_preserves_mean_and_constants() -> None:
    img = RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = resize_image(img, (96, 96))
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert abs(float(out.mean()) - float(img.mean())) < 0.5
    flat = np.full((37, 53, 3), 200, np.uint8)
    assert np.all(resize_image(flat, (10, 7)) == 200)


def test_fractional_area_weights() -> None:
    row = np.array(
        [[0.0, 3.0, 6.0]], np.float32
    )  # 3 -> 2: out0 = (0 + 0.5*3)/1.5, out1 = (0.5*3+6)/1.5
    out = resize_image(row[:, :, None], (1, 2))[0, :, 0]
    np.testing.assert_allclose(out, [1.0, 5.0], rtol=1e-6)


def test_upscale_is_bilinear_with_half_pixel_centres() -> None:
    img = np.array([[0.0, 10.0]], np.float32)[:, :, None]
    out = resize_image(img, (1, 4))[0, :, 0]
    np.testing.assert_allclose(out, [0.0, 2.5, 7.5, 10.0], atol=1e-6)
    assert resize_image(np.zeros((20, 30), np.uint8), (40, 45)).shape == (40, 45)


def test_same_size_is_identity_and_bad_size_raises() -> None:
    img = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    assert resize_image(img, (6, 6)) is img
    with pytest.raises(ValueError):
        resize_image(img, (0, 6))
    with pytest.raises(ValueError):
        resize_image(np.zeros((3,), np.uint8), (2, 2))


def test_prepare_and_layout() -> None:
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[:, :, 2] = 255  # red in BGR
    out = prepare_image(bgr, "bgr8", (24, 32))
    assert out.shape == (24, 32, 3) and np.all(out[:, :, 0] == 255) and np.all(out[:, :, 1:] == 0)
    frames = np.stack([out, out])  # [To, H, W, 3]
    chw = frames_to_chw_float(frames)
    assert chw.shape == (2, 3, 24, 32) and chw.dtype == np.float32
    assert chw[:, 0].min() == 1.0 and chw[:, 1:].max() == 0.0
    obs = observation_images({"wrist": frames, "front": frames * 0}, ["front", "wrist"])
    assert obs.shape == (2, 2, 3, 24, 32) and obs[:, 0].max() == 0.0 and obs[:, 1].max() == 1.0
    with pytest.raises(ValueError, match="cameras"):
        observation_images({"front": frames}, ["front", "wrist"])
