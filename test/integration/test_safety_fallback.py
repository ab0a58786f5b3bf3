"""The braking fallback: infeasible constraint sets, non-finite references and forced solver
failures all brake with the reason, within the limits, and the filter recovers afterwards."""

from __future__ import annotations

import numpy as np
import pytest
from core_settings import UNIT_LIMITS, safety

from diffusion_controller.control import panda
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter import SafetyFilter
from diffusion_controller.control.types import FilterResult, Sphere

READY = panda.PANDA_READY_Q
TARGET = READY + np.array([0.6, 0.3, -0.5, 0.4, 0.6, -0.3, 0.5])


def moving_filter(robot: RobotModel, mode: str, **kw) -> SafetyFilter:
    f = SafetyFilter(robot, safety(**{**UNIT_LIMITS, **kw}, safety_mode=mode))
    f.reset(READY)
    for _ in range(20):
        assert f.step(TARGET).status == "ok"
    assert np.max(np.abs(f.state[1])) > 0.3
    return f


def assert_braking(f: SafetyFilter, r: FilterResult, v_before: np.ndarray) -> None:
    lim = f.limits
    assert r.status in ("braking", "holding")
    assert r.intervened
    assert np.all(np.abs(r.velocities) <= np.abs(v_before) + 1e-12)
    assert np.all(np.abs(r.accelerations) <= lim.acceleration + 1e-12)
    assert np.all(r.positions >= lim.lower) and np.all(r.positions <= lim.upper)


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
def test_infeasible_obstacle_brakes(robot: RobotModel, mode: str) -> None:
    f = moving_filter(robot, mode, table_z=None)
    q, v, _ = f.state
    hand = robot.sphere_positions(q)[robot.sphere_groups.index("panda_hand")]
    # a keep-out sphere swallowing the hand: no acceleration satisfies its rows
    f.set_obstacles([Sphere(hand, 0.1, "intruder")])
    r = f.step(TARGET)
    assert_braking(f, r, v)
    assert r.reason.startswith("infeasible")
    assert "intruder" in r.reason
    # once it is gone the filter tracks again
    f.set_obstacles([])
    assert f.step(TARGET).status == "ok"


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
@pytest.mark.parametrize(
    ("ref", "why"),
    [(np.full(7, np.nan), "q_ref is not finite"), (np.full(7, np.inf), "q_ref is not finite"),
     (np.zeros(9), "q_ref has 9 values, expected 7")],
)
def test_bad_reference_brakes(robot: RobotModel, mode: str, ref: np.ndarray, why: str) -> None:
    f = moving_filter(robot, mode)
    v = f.state[1]
    r = f.step(ref)
    assert_braking(f, r, v)
    assert r.reason == why
    assert f.step(TARGET).status == "ok"


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
def test_forced_solver_failure_brakes(robot: RobotModel, mode: str) -> None:
    f = moving_filter(robot, mode)
    f.update_config(max_iter=1)
    v = f.state[1]
    r = f.step(TARGET + 0.5)
    assert_braking(f, r, v)
    assert r.reason.startswith("solver failure: maximum iterations reached")
    f.update_config(max_iter=400, time_limit=1e-9)
    v = f.state[1]
    r = f.step(TARGET + 0.5)
    assert_braking(f, r, v)
    assert r.reason.startswith("solver failure: run time limit reached")
    f.update_config(time_limit=0.0)
    assert f.step(TARGET).status == "ok"


def test_repeated_failures_bring_the_arm_to_a_hold(robot: RobotModel) -> None:
    f = moving_filter(robot, "cbf")
    statuses = [f.step(np.full(7, np.nan)).status for _ in range(60)]
    assert statuses[0] == "braking"
    assert statuses[-1] == "holding"
    np.testing.assert_array_equal(f.state[1], 0.0)


def test_starved_solver_stays_within_limits(robot: RobotModel) -> None:
    """With a solver that stops before its first iteration, a tick either brakes or accepts the
    warm start, which is clipped and repaired: never anything outside the limits."""
    f = moving_filter(robot, "cbf")
    f.update_config(time_limit=1e-9)
    lim = f.limits
    statuses = []
    for _ in range(100):
        r = f.step(TARGET)
        statuses.append(r.status)
        assert np.all(r.positions >= lim.lower) and np.all(r.positions <= lim.upper)
        assert np.all(np.abs(r.velocities) <= lim.velocity + 1e-12)
        assert np.all(np.abs(r.accelerations) <= lim.acceleration + 1e-12)
    assert statuses[0] == "braking"
