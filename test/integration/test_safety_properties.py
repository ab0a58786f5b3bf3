"""Property tests: whatever the reference stream and the (initially clear) obstacles, the commands
of the safety filter, re-integrated as a double integrator, stay within the joint limits, and
the link spheres stay out of the keep-out spheres and above the table (to 1 mm). Both modes."""

from __future__ import annotations

import numpy as np
import pytest
from core_settings import UNIT_LIMITS, safety
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from diffusion_controller.control import panda
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter import SafetyFilter
from diffusion_controller.control.types import Sphere

DT = 0.01
TABLE_Z = 0.0
TICKS = {"cbf": 200, "mpc": 150}
EXAMPLES = {"cbf": 60, "mpc": 20}
ROBOT = RobotModel.from_urdf(panda.panda_urdf_path())

obstacle = st.tuples(
    st.floats(0.2, 0.75), st.floats(-0.4, 0.4), st.floats(0.05, 0.7), st.floats(0.02, 0.15)
)
stream = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1),
    "p_jump": st.floats(0.0, 0.2),
    "p_nan": st.floats(0.0, 0.05),
    "p_inf": st.floats(0.0, 0.05),
    "p_far": st.floats(0.0, 0.1),
    "p_dive": st.floats(0.02, 0.3),
    "walk": st.floats(0.0, 0.1),
    "spread": st.floats(0.1, 2.0),
    "with_velocity": st.booleans(),
})


def _clearances(q: np.ndarray, obstacles: list[Sphere]) -> tuple[float, float]:
    p = ROBOT.sphere_positions(q)[ROBOT.moving]
    r = ROBOT.sphere_radii[ROBOT.moving]
    table = float(np.min(p[:, 2] - r - TABLE_Z))
    obs = min((float(np.min(np.linalg.norm(p - o.center, axis=1) - r - o.radius))
               for o in obstacles), default=np.inf)
    return table, obs


def _references(rng: np.random.Generator, params: dict, lim, q0: np.ndarray, ticks: int):
    target = q0.copy()
    for _ in range(ticks):
        u = rng.random()
        if u < params["p_far"]:
            target = rng.uniform(lim.lower - 3.0, lim.upper + 3.0)  # far outside the limits
        elif u < params["p_far"] + params["p_jump"]:
            target = q0 + rng.normal(0.0, params["spread"], q0.shape)
        elif u < params["p_far"] + params["p_jump"] + params["p_dive"]:
            # lean forward and fold down: the hand sweeps through the space in front of the
            # robot (where the obstacles are) and down through the table
            target = np.array([0.0, 1.0, 0.0, -1.5, 0.0, 1.5, 0.785])
            target = target + rng.normal(0.0, 0.3, q0.shape)
        target = target + rng.normal(0.0, params["walk"], q0.shape)
        ref = target.copy()
        v_ref = rng.normal(0.0, 2.0, q0.shape) if params["with_velocity"] else None
        u = rng.random()
        if u < params["p_nan"]:
            ref[rng.integers(len(ref))] = np.nan
        elif u < params["p_nan"] + params["p_inf"]:
            ref[rng.integers(len(ref))] = rng.choice([np.inf, -np.inf])
        yield ref, v_ref


def _run(mode: str, params: dict, raw_obstacles: list[tuple[float, ...]]) -> None:
    rng = np.random.default_rng(params["seed"])
    q0 = panda.PANDA_READY_Q + rng.uniform(-0.4, 0.4, 7)
    obstacles = [Sphere(np.array(o[:3]), o[3], f"o{k}") for k, o in enumerate(raw_obstacles)]
    table, obs = _clearances(q0, obstacles)
    assume(table > 0.03 and obs > 0.03)  # the arm starts clear of everything
    f = SafetyFilter(ROBOT, safety(**UNIT_LIMITS, safety_mode=mode, table_z=TABLE_Z,
                                obstacles=obstacles))
    lim = f.limits
    assume(np.all(q0 > lim.lower) and np.all(q0 < lim.upper))
    f.reset(q0)
    q, v = q0.copy(), np.zeros(7)
    for ref, v_ref in _references(rng, params, lim, q0, TICKS[mode]):
        r = f.step(ref, v_ref)
        a = r.accelerations
        assert np.all(np.isfinite(r.positions)) and np.all(np.isfinite(r.velocities))
        assert np.all(np.isfinite(a))
        # the command is the exact double integrator of the returned acceleration
        q, v = q + v * DT + 0.5 * a * DT * DT, v + a * DT
        np.testing.assert_allclose(r.positions, q, atol=1e-9)
        np.testing.assert_allclose(r.velocities, v, atol=1e-9)
        q, v = r.positions, r.velocities
        assert np.all(q >= lim.lower - 1e-9) and np.all(q <= lim.upper + 1e-9)
        assert np.all(np.abs(v) <= lim.velocity + 1e-9)
        assert np.all(np.abs(a) <= lim.acceleration + 1e-9)
        table, obs = _clearances(q, obstacles)
        assert table >= -1e-3, (table, r.reason)
        assert obs >= -1e-3, (obs, r.reason)


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
def test_commands_stay_safe(mode: str) -> None:
    @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(params=stream, raw_obstacles=st.lists(obstacle, min_size=0, max_size=4))
    def check(params: dict, raw_obstacles: list) -> None:
        _run(mode, params, raw_obstacles)

    check()
