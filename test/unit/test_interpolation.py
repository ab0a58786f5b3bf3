"""The spline pieces: pass through the points, C2 at every joint of pieces, exact jerk bounds."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.control.interpolation import (
    PiecewisePolynomial,
    concatenate,
    max_abs_jerk,
    quintic,
    single,
    spline_through,
    stop_coefficients,
    stop_duration,
)


def _knots(n: int = 8, joints: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = 1.0 + 0.1 * np.arange(n)
    points = np.cumsum(rng.normal(0.0, 0.05, size=(n, joints)), axis=0)
    return times, points


def _one_sided(pp: PiecewisePolynomial, t: float, eps: float = 1e-7):
    """(q, v, a) just left and just right of t, by sampling the segments on either side."""
    left = [pp.sample(np.array([t - eps]), k)[0] for k in range(3)]
    right = [pp.sample(np.array([t + eps]), k)[0] for k in range(3)]
    return left, right


def test_spline_passes_through_points_and_is_c2_at_knots() -> None:
    times, points = _knots()
    pp = spline_through(times, points)
    np.testing.assert_allclose(pp.sample(times), points, atol=1e-12)
    for t in times[1:-1]:
        left, right = _one_sided(pp, float(t))
        for k in range(3):
            np.testing.assert_allclose(left[k], right[k], atol=1e-4)
    # natural end: zero acceleration where the data runs out
    np.testing.assert_allclose(pp.evaluate(pp.end)[2], 0.0, atol=1e-9)


def test_two_points_give_a_straight_line() -> None:
    pp = spline_through(np.array([0.0, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    q, v, a = pp.evaluate(0.25)
    np.testing.assert_allclose(q, [0.5, 0.5])
    np.testing.assert_allclose(v, [2.0, -2.0])
    np.testing.assert_allclose(a, 0.0)


def test_evaluate_matches_sample_and_clamps_outside() -> None:
    times, points = _knots()
    pp = spline_through(times, points)
    ts = np.linspace(times[0], times[-1], 37)
    for k in range(3):
        many = pp.sample(ts, k)
        for i, t in enumerate(ts):
            np.testing.assert_allclose(pp.evaluate(float(t))[k], many[i], atol=1e-10)
    q, v, a = pp.evaluate(times[0] - 1.0)
    np.testing.assert_allclose(q, points[0], atol=1e-12)
    q, v, a = pp.evaluate(times[-1] + 1.0)
    np.testing.assert_allclose(q, points[-1], atol=1e-12)
    assert not v.any() and not a.any()


def test_quintic_meets_both_boundary_states() -> None:
    rng = np.random.default_rng(1)
    s0 = rng.normal(size=(3, 7))
    s1 = rng.normal(size=(3, 7))
    T = 0.37
    pp = single(2.0, T, quintic(*s0, *s1, T))
    for k in range(3):
        np.testing.assert_allclose(pp.sample(np.array([2.0]), k)[0], s0[k], atol=1e-9)
        np.testing.assert_allclose(pp.sample(np.array([2.0 + T]), k)[0], s1[k], atol=1e-8)


def test_quintic_batched_over_durations_matches_single() -> None:
    rng = np.random.default_rng(2)
    s0 = rng.normal(size=(3, 4))
    ends = rng.normal(size=(3, 5, 4))
    durations = np.linspace(0.1, 1.0, 5)
    batch = quintic(*s0, ends[0], ends[1], ends[2], durations)
    for m, T in enumerate(durations):
        one = quintic(*s0, ends[0, m], ends[1, m], ends[2, m], float(T))
        np.testing.assert_allclose(batch[m], one, rtol=1e-12, atol=1e-12)


def test_max_abs_jerk_is_exact_against_dense_sampling() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        s0 = rng.normal(size=(3, 7))
        s1 = rng.normal(size=(3, 7))
        T = float(rng.uniform(0.1, 1.0))
        c = quintic(*s0, *s1, T)
        dense = single(0.0, T, c).sample(np.linspace(0.0, T, 4001), 3)
        np.testing.assert_allclose(max_abs_jerk(c, T), np.abs(dense).max(axis=0), rtol=1e-5)


def test_stop_profile_reaches_rest_within_bounds() -> None:
    q = np.array([0.1, -0.2, 0.3])
    v = np.array([0.8, -0.3, 0.0])
    a = np.array([0.5, 1.0, -0.2])
    acc = np.full(3, 2.0)
    jerk = np.full(3, 50.0)
    T = stop_duration(v, a, acc, jerk)
    pp = single(0.0, T, stop_coefficients(q, v, a, T))
    ts = np.linspace(0.0, T, 2001)
    assert np.abs(pp.sample(ts, 2)).max() <= 2.0 + np.abs(a).max() + 1e-9
    assert np.abs(pp.sample(ts, 3)).max() <= 50.0 + 1e-9
    qe, ve, ae = pp.evaluate(T)
    np.testing.assert_allclose(ve, 0.0, atol=1e-12)
    np.testing.assert_allclose(ae, 0.0, atol=1e-9)
    np.testing.assert_allclose(qe, q + 0.5 * v * T + a * T * T / 12.0, atol=1e-12)


def test_after_and_concatenate_preserve_the_curve() -> None:
    times, points = _knots()
    pp = spline_through(times, points)
    cut = 1.234
    rest = pp.after(cut)
    assert rest is not None and rest.start == pytest.approx(cut)
    ts = np.linspace(cut, times[-1], 50)
    for k in range(3):
        np.testing.assert_allclose(rest.sample(ts, k), pp.sample(ts, k), atol=1e-9)
    assert pp.after(times[-1]) is None
    z = np.zeros(7)
    head = single(cut - 0.2, 0.2, quintic(z, z, z, *pp.evaluate(cut), 0.2))
    joined = concatenate([head, rest])
    assert joined.start == pytest.approx(cut - 0.2) and joined.end == pytest.approx(times[-1])
    left, right = _one_sided(joined, cut)
    for k in range(3):
        np.testing.assert_allclose(left[k], right[k], atol=1e-4)


def test_rejects_bad_construction() -> None:
    with pytest.raises(ValueError):
        PiecewisePolynomial(np.array([0.0, 1.0]), np.full((1, 6, 2), np.nan))
    with pytest.raises(ValueError):
        PiecewisePolynomial(np.array([1.0, 0.0]), np.zeros((1, 6, 2)))
    with pytest.raises(ValueError):
        spline_through(np.array([0.0]), np.zeros((1, 2)))


@pytest.mark.parametrize("n", [3, 4, 9, 17])
def test_spline_matches_scipy_with_the_same_end_conditions(n: int) -> None:
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(n)
    times = np.cumsum(rng.uniform(0.05, 0.15, size=n))
    points = rng.normal(size=(n, 3))
    ours = spline_through(times, points)
    ref = CubicSpline(times, points, axis=0, bc_type=("not-a-knot", "natural"))
    ts = np.linspace(times[0], times[-1], 101)
    for k in range(3):
        np.testing.assert_allclose(ours.sample(ts, k), ref(ts, k), rtol=1e-9, atol=1e-9)


def test_sample_states_matches_sample() -> None:
    times, points = _knots()
    pp = spline_through(times, points)
    ts = np.concatenate([np.linspace(times[0] - 0.1, times[-1] + 0.1, 23), [times[-1]]])
    both = pp.sample_states(ts)
    for k in range(3):
        np.testing.assert_allclose(both[k], pp.sample(ts, k), atol=1e-12)
