"""Normalizer: [-1, 1] on the training range, exact inverse, safe on constant dimensions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffusion_controller.policy.normalize import (
    Normalizer,
    fit_normalizers,
    normalizers_from_dict,
    normalizers_to_dict,
)


def test_maps_training_range_to_minus_one_one() -> None:
    data = np.array([[0.0, -2.0, 5.0], [1.0, 2.0, 5.0], [0.5, 0.0, 5.0]])
    n = Normalizer.fit(data)
    y = n.normalize(data)
    assert y.min(axis=0)[:2].tolist() == [-1.0, -1.0]
    assert y.max(axis=0)[:2].tolist() == [1.0, 1.0]
    # Constant dimension: finite, centred, invertible.
    assert np.all(y[:, 2] == 0.0)
    assert n.constant.tolist() == [False, False, True]
    np.testing.assert_allclose(n.unnormalize(y), data, atol=1e-12)


def test_keeps_float32_and_float64() -> None:
    n = Normalizer([0, 0], [1, 2])
    assert n.normalize(np.zeros((3, 2), np.float32)).dtype == np.float32
    assert n.normalize(np.zeros((3, 2), np.float64)).dtype == np.float64
    assert n.unnormalize(np.zeros((4, 5, 2), np.float32)).shape == (4, 5, 2)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 3), elements=st.floats(-1e3, 1e3)))
def test_round_trip_property(data: np.ndarray) -> None:
    n = Normalizer.fit(data)
    y = n.normalize(data)
    assert np.all(np.isfinite(y))
    assert np.all(np.abs(y) <= 1.0 + 1e-9)
    np.testing.assert_allclose(n.unnormalize(y), data, rtol=1e-9, atol=1e-9)


def test_margin_widens_range() -> None:
    n = Normalizer.fit(np.array([[0.0], [1.0]]), margin=0.1)
    assert n.low[0] == pytest.approx(-0.1) and n.high[0] == pytest.approx(1.1)


def test_serialisation_round_trip() -> None:
    norms = fit_normalizers(
        np.random.default_rng(0).normal(size=(10, 4)), np.random.default_rng(1).normal(size=(10, 4))
    )
    again = normalizers_from_dict(json.loads(json.dumps(normalizers_to_dict(norms))), dim=4)
    for key in ("joints", "actions"):
        np.testing.assert_array_equal(again[key].low, norms[key].low)
        np.testing.assert_array_equal(again[key].high, norms[key].high)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Normalizer([0, 0], [1]), "same non-zero size"),
        (lambda: Normalizer([0], [np.nan]), "NaN"),
        (lambda: Normalizer([1], [0]), "low must be"),
        (lambda: Normalizer.fit(np.array([[np.inf]])), "NaN or Inf"),
        (lambda: Normalizer.fit(np.zeros((0, 3))), "no data"),
        (lambda: Normalizer([0, 0], [1, 1]).normalize(np.zeros(3)), "last dimension"),
        (lambda: Normalizer.from_dict({"low": [0]}), "expected keys"),
        (lambda: normalizers_from_dict({"joints": {"low": [0], "high": [1]}}), "actions"),
        (
            lambda: normalizers_from_dict(
                {"joints": {"low": [0], "high": [1]}, "actions": {"low": [0], "high": [1]}}, dim=2
            ),
            "expected 2",
        ),
    ],
)
def test_bad_input_raises(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()
