"""tighten() and the braking model the filter's joint guarantees rest on."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.control.braking import (
    brake_acceleration,
    stop_distance,
    viability_bounds,
)
from diffusion_controller.control.limits import tighten
from diffusion_controller.control.types import JointLimits


def _limits() -> JointLimits:
    return JointLimits(["a", "b"], np.array([-1.0, -2.0]), np.array([1.0, 0.0]),
                       np.array([2.0, 3.0]), np.array([10.0, 20.0]), np.array([100.0, 200.0]))


def test_tighten_values() -> None:
    out = tighten(_limits(), 0.1, 0.5, 0.8, 0.25)
    np.testing.assert_allclose(out.lower, [-0.9, -1.9])
    np.testing.assert_allclose(out.upper, [0.9, -0.1])
    np.testing.assert_allclose(out.velocity, [1.0, 1.5])
    np.testing.assert_allclose(out.acceleration, [8.0, 16.0])
    np.testing.assert_allclose(out.jerk, [25.0, 50.0])
    per_joint = tighten(_limits(), np.array([0.0, 0.5]))
    np.testing.assert_allclose(per_joint.upper, [1.0, -0.5])
    assert tighten(_limits()).names == ["a", "b"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"position_margin": -0.1}, "non-negative"),
        ({"position_margin": np.nan}, "finite"),
        ({"position_margin": 1.0}, r"no range for joints \['a', 'b'\]"),
        ({"velocity_scale": 0.0}, "velocity_scale"),
        ({"acceleration_scale": 1.5}, "acceleration_scale"),
        ({"jerk_scale": float("inf")}, "jerk_scale"),
    ],
)
def test_tighten_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tighten(_limits(), **kwargs)


def _brake_until_stopped(q: float, v: float, b: float, dt: float) -> tuple[list[float], int]:
    qs = [q]
    for k in range(10000):
        u = float(brake_acceleration(np.array([v]), np.array([b]), dt)[0])
        q, v = q + v * dt + 0.5 * u * dt * dt, v + u * dt
        qs.append(q)
        if v == 0.0:
            return qs, k
    raise AssertionError("did not stop")


def test_braking_profile_and_distance() -> None:
    dt, b = 0.01, 12.0
    for v0 in [0.0, 0.05, 0.119, 0.12, 0.5, 2.0, -1.3]:
        qs, _ = _brake_until_stopped(0.0, v0, b, dt)
        travel = np.array(qs)
        # monotone along the initial direction, within the stated bound
        assert np.all(np.diff(travel) * np.sign(v0 or 1.0) >= -1e-15)
        assert abs(travel[-1]) <= float(stop_distance(np.array([v0]), np.array([b]), dt)[0]) + 1e-15


def test_viability_bounds_are_sound_and_tight() -> None:
    """At the bound, braking stops inside the limit and at most b dt^2/8 (the discretisation
    allowance) short of it."""
    rng = np.random.default_rng(0)
    dt = 0.01
    lo, hi, b = np.array([-1.0]), np.array([1.0]), np.array([12.0])
    for _ in range(300):
        v = rng.uniform(-2.5, 2.5, 1)
        # states near the boundary of what can still stop inside [lo, hi]
        reach = v * np.abs(v) / (2 * b)
        q = np.clip(np.sign(v) * (1.0 - rng.uniform(0, 0.05)) - reach, -1.0, 1.0)
        u_lo, u_hi = viability_bounds(q, v, lo, hi, b, dt)
        for u, side in [(u_hi, 1.0), (u_lo, -1.0)]:
            if not -b[0] <= u[0] <= b[0]:
                continue
            qn, vn = q + v * dt + 0.5 * u * dt * dt, v + u * dt
            qs, _ = _brake_until_stopped(float(qn[0]), float(vn[0]), float(b[0]), dt)
            assert min(qs) >= lo[0] - 1e-12 and max(qs) <= hi[0] + 1e-12
            extreme = max(qs) if side > 0 else -min(qs)
            assert extreme >= 1.0 - b[0] * dt * dt / 8 - 2e-6
    inf_lo, inf_hi = viability_bounds(np.zeros(1), np.zeros(1), np.array([-np.inf]),
                                      np.array([np.inf]), b, dt)
    assert inf_lo[0] == -np.inf and inf_hi[0] == np.inf
