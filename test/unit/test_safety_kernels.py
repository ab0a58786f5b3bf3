"""The safety filter's per-tick kernels against direct (slow, obvious) computations: barrier
distances and gradients, the row screen (every row it leaves out holds over the whole
acceleration box), the joint box (with its far-from-limits shortcut), the preallocated viability
bounds, and the MPC objective's precomputed products."""

from __future__ import annotations

import numpy as np
import pytest
from core_settings import UNIT_LIMITS, safety

from diffusion_controller.control import panda
from diffusion_controller.control.barriers import CartesianBarriers
from diffusion_controller.control.braking import UpperBounds, upper_bounds, viability_bounds
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter import SafetyFilter
from diffusion_controller.control.types import Sphere

OBSTACLES = [
    Sphere(np.array([0.5, 0.2, 0.3]), 0.1, "a"),
    Sphere(np.array([0.35, -0.3, 0.6]), 0.05, "b"),
]
SCENE = {
    "table_z": 0.02,
    "workspace_min": (-0.8, -0.8, -0.5),
    "workspace_max": (0.7, 0.8, 1.2),
    "obstacles": OBSTACLES,
    "self_collision_pairs": panda.PANDA_SELF_COLLISION_PAIRS,
}


def _reference_distances(robot: RobotModel, bars: CartesianBarriers, q: np.ndarray) -> np.ndarray:
    """Every row's distance, one row at a time, from the sphere centres alone."""
    pos = robot.sphere_positions(q)
    lo = np.array([-0.8, -0.8, max(-0.5, 0.02)])
    hi = np.array([0.7, 0.8, 1.2])
    out = []
    for s in bars.moving:
        p, r = pos[s], robot.sphere_radii[s]
        out += [p[0] - lo[0] - r, hi[0] - p[0] - r, p[1] - lo[1] - r, hi[1] - p[1] - r,
                p[2] - lo[2] - r, hi[2] - p[2] - r]
    for o in OBSTACLES:
        out += [np.linalg.norm(pos[s] - o.center) - robot.sphere_radii[s] - o.radius
                for s in bars.moving]
    out += [np.linalg.norm(pos[a] - pos[b]) - robot.sphere_radii[a] - robot.sphere_radii[b]
            for a, b in zip(bars.pair_a, bars.pair_b, strict=True)]
    return np.array(out)


def test_barrier_distances_and_gradients(robot: RobotModel) -> None:
    bars = CartesianBarriers(robot, panda.PANDA_SELF_COLLISION_PAIRS, len(OBSTACLES))
    bars.set_workspace(SCENE["workspace_min"], SCENE["workspace_max"], SCENE["table_z"])
    bars.set_obstacles(OBSTACLES)
    kin = robot.tick_kinematics()
    rng = np.random.default_rng(2)
    lim = robot.urdf_limits()
    rows = np.arange(bars.count)
    for _ in range(5):
        q = rng.uniform(lim.lower + 0.1, lim.upper - 0.1)
        kin.update(q)
        h = bars.distances(kin.pos).copy()
        np.testing.assert_allclose(h, _reference_distances(robot, bars, q), atol=1e-12)
        g = bars.gradients(rows, kin.jp)
        eps = 1e-6
        for j in range(robot.nq):  # central differences of every row at once
            dq = np.zeros(robot.nq)
            dq[j] = eps
            fd = (_reference_distances(robot, bars, q + dq)
                  - _reference_distances(robot, bars, q - dq)) / (2 * eps)
            np.testing.assert_allclose(g[:, j], fd, atol=1e-6)


def _states(f: SafetyFilter, rng: np.random.Generator, count: int):
    """Commanded-like states: inside the limits, |v| within the limit, a within the box."""
    lim = f.limits
    for _ in range(count):
        q = rng.uniform(lim.lower, lim.upper)
        if rng.random() < 0.5:  # near a limit
            j = rng.integers(f.n)
            q[j] = (lim.upper[j] - rng.uniform(0, 0.05) if rng.random() < 0.5
                    else lim.lower[j] + rng.uniform(0, 0.05))
        v = rng.uniform(-1, 1, f.n) * lim.velocity * rng.choice([0.01, 0.3, 1.0])
        a = rng.uniform(-1, 1, f.n) * lim.acceleration
        yield q, v, a


def test_screen_leaves_out_only_rows_that_always_hold(robot: RobotModel) -> None:
    """Build every row (screen off) and the screened rows: the kept ones are the same rows with
    the same values, and each left-out row holds (strictly, with the next tick's reserve)
    everywhere in the acceleration box."""
    f = SafetyFilter(robot, safety(**UNIT_LIMITS, **SCENE))
    f.reset(panda.PANDA_READY_Q)
    rng = np.random.default_rng(5)
    amax = f.limits.acceleration
    left_out = 0
    for q, v, _ in _states(f, rng, 40):
        f._kin.update(q)
        f._screen = False
        n_all = f._barrier_rows(v)
        rs_all, strict_all, rhs_all = f._rs.copy(), f._strict.copy(), f._rhs.copy()
        worst_all, _ = f._corners(n_all, -amax, amax)
        f._screen = True
        count = f._barrier_rows(v)
        cand = f._cand
        assert f._rs.shape == (2 * f.n, count)
        np.testing.assert_allclose(f._rs, rs_all[:, cand], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(f._rhs, rhs_all[cand], rtol=1e-12, atol=1e-6)
        out = np.setdiff1d(np.arange(n_all), cand)
        left_out += len(out)
        assert np.all(worst_all[out] >= strict_all[out])
        assert count == len(cand)
    assert left_out > 0


def test_joint_box_matches_the_direct_formula(robot: RobotModel) -> None:
    f = SafetyFilter(robot, safety(**UNIT_LIMITS))
    f.reset(panda.PANDA_READY_Q)
    lim = f.limits
    amax, dt = lim.acceleration, f.dt
    rng = np.random.default_rng(6)
    shortcut = checked = 0
    for q, v, a in _states(f, rng, 400):
        p_lo, p_hi = viability_bounds(q, v, lim.lower, lim.upper, amax, dt)
        ref_lo = np.maximum(np.maximum(-amax, p_lo), (-lim.velocity - v) / dt)
        ref_hi = np.minimum(np.minimum(amax, p_hi), (lim.velocity - v) / dt)
        if np.any(ref_lo > ref_hi):
            continue  # a state the filter never commands (cannot stop in time)
        checked += 1
        shortcut += bool((f._far2 - np.concatenate((q, -q))).min() >= 0.0)
        phys_lo, phys_hi, lo, hi = f._joint_box(q, v, a, lim.velocity)
        np.testing.assert_allclose(phys_lo, ref_lo, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(phys_hi, ref_hi, rtol=1e-12, atol=1e-9)
        # jerk cannot bind for the Panda at 100 Hz
        assert f._jerk_free
        np.testing.assert_array_equal(lo, phys_lo)
        np.testing.assert_array_equal(hi, phys_hi)
    assert 0 < shortcut < checked  # both paths were exercised


def test_far_shortcut_is_sound(robot: RobotModel) -> None:
    """Wherever the joint box skips the viability bound, that bound is above the acceleration
    limit for every velocity the filter can command."""
    f = SafetyFilter(robot, safety(**UNIT_LIMITS))
    lim, n = f.limits, f.n
    amax = lim.acceleration
    lo_q, hi_q = -f._far2[n:], f._far2[:n]  # the region where the shortcut applies
    assert np.all(lo_q < hi_q)
    rng = np.random.default_rng(9)
    for _ in range(2000):
        q = rng.uniform(lo_q, hi_q)
        edge = rng.random(n) < 0.5
        q = np.where(edge, np.where(rng.random(n) < 0.5, lo_q, hi_q), q)
        assert (f._far2 - np.concatenate((q, -q))).min() >= 0.0
        v = rng.choice([-1.0, 1.0], n) * lim.velocity * rng.choice([1.0, rng.uniform()])
        lo, hi = viability_bounds(q, v, lim.lower, lim.upper, amax, f.dt)
        assert np.all(hi >= amax) and np.all(lo <= -amax)


def _upper_bounds_reference(q, v, top, b, dt):
    """The viability bound written out plainly (as braking.py derives it)."""
    room = top - q - 0.5 * v * dt
    r = np.maximum(room, 0.0)
    slow = b * (np.sqrt(dt * dt + 2.0 * r / b) - dt)
    fast = np.sqrt(2.0 * b * r) - 0.5 * b * dt
    x = np.where(slow <= 0.25 * b * dt, slow, fast)
    out = np.where(room >= 0.0, (x - v) / dt, 2.0 * (top - q - v * dt) / (dt * dt))
    return np.where(top == np.inf, np.inf, out)


def test_preallocated_viability_bounds_match() -> None:
    rng = np.random.default_rng(4)
    dt = 0.01
    top = rng.uniform(-1, 2, 14)
    top[3] = np.inf
    b = rng.uniform(5, 20, 14)
    bounds = UpperBounds(top, b, dt)
    for _ in range(300):
        q = top - rng.uniform(-0.05, 0.6, 14)
        q[3] = rng.uniform(-3, 3)
        v = rng.uniform(-3, 3, 14) * rng.choice([1e-3, 0.1, 1.0])
        fast = bounds(q, v)
        np.testing.assert_array_equal(fast, upper_bounds(q, v, top, b, dt))
        np.testing.assert_allclose(fast, _upper_bounds_reference(q, v, top, b, dt),
                                   rtol=1e-12, atol=1e-9)
        assert fast[3] == np.inf


@pytest.mark.parametrize("inputs", [5, 10])
def test_mpc_objective_products(robot: RobotModel, inputs: int) -> None:
    """The precomputed products give the horizon's tracking cost and the unconstrained first
    step that the explicit construction gives (with move blocking, and one input per tick)."""
    f = SafetyFilter(robot, safety(**UNIT_LIMITS, safety_mode="mpc",
                                   joint_weights=(1, 2, 1, 1, 3, 1, 1), mpc_inputs=inputs))
    f.reset(panda.PANDA_READY_Q)
    cfg, dt, n, N, M = f.config, f.dt, f.n, f._N, f._M
    expand = f._mpc_expand  # [N, M]: tick k's acceleration from the block variables
    assert inputs == M and np.all(expand.sum(axis=1) == 1.0)
    rng = np.random.default_rng(11)
    w = np.asarray(cfg.joint_weights, dtype=float)
    for fut_len in (None, 1, 4, N, N + 3):
        q, v, a, qr, vr, ar = (rng.normal(size=n) for _ in range(6))
        fut = None if fut_len is None else rng.normal(size=(fut_len, n))
        scale = rng.choice([1.0, 0.4])
        u_free = f._objective_mpc(q, v, a, qr, vr, ar, fut, scale)
        lin_vec = f._qvec[:n * M].reshape(n, M).copy()
        if fut is not None:
            refs = np.empty((N, n))
            m = min(N, len(fut))
            refs[:m], refs[m:] = fut[:m], fut[m - 1]
            refs[0] = qr
            vrefs = np.empty((N, n))
            vrefs[1:] = (refs[1:] - refs[:-1]) / dt
        else:
            refs = qr + np.arange(N)[:, None] * dt * vr * scale
            vrefs = np.repeat((vr * scale)[None], N, axis=0)
        vrefs[0] = vr * scale
        arefs = np.zeros((N, n))
        arefs[0] = ar * scale
        d0 = np.zeros((N, n))
        d0[0] = a
        cq = q + np.arange(1, N + 1)[:, None] * dt * v
        lin = (cfg.mpc_position_weight * f._phi_q.T @ (cq - refs)
               + cfg.mpc_velocity_weight * f._phi_v.T @ (v - vrefs)
               - cfg.mpc_acceleration_weight * expand.T @ arefs
               - cfg.jerk_weight * f._mpc_diff.T @ d0)
        expected = (2.0 * lin * w).T
        np.testing.assert_allclose(lin_vec, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
        first = np.stack([np.linalg.inv(2 * w[i] * f._mpc_block)[0] for i in range(n)])
        np.testing.assert_allclose(u_free, -np.sum(first * expected, axis=1), rtol=1e-9,
                                   atol=1e-9)
    f.update_config(jerk_weight=0.5)  # live: the products follow
    u_free = f._objective_mpc(q, v, a, qr, vr, ar, None, 1.0)
    assert f._mpc_rho == 0.5 and np.all(np.isfinite(u_free))
