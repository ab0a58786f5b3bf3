"""SafetyFilter: API, tracking, the braking fallback, and each constraint family at work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from core_settings import UNIT_LIMITS as LIMITS
from core_settings import safety as safety_config

from diffusion_controller.control import panda
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter import SafetyFilter, mpc_blocks
from diffusion_controller.control.types import Sphere

READY = panda.PANDA_READY_Q
DT = 0.01


def make(robot: RobotModel, q0: np.ndarray = READY, **kw) -> SafetyFilter:
    f = SafetyFilter(robot, safety_config(**{**LIMITS, **kw}))
    f.reset(q0)
    return f


def run(f: SafetyFilter, refs, v_refs=None) -> dict[str, np.ndarray | list]:
    out: dict[str, list] = {"q": [], "v": [], "a": [], "status": [], "reason": [], "int": []}
    for k, qr in enumerate(refs):
        r = f.step(qr, None if v_refs is None else v_refs[k])
        out["q"].append(r.positions)
        out["v"].append(r.velocities)
        out["a"].append(r.accelerations)
        out["status"].append(r.status)
        out["reason"].append(r.reason)
        out["int"].append(r.intervened)
    for key in ("q", "v", "a"):
        out[key] = np.array(out[key])
    return out


def assert_within_limits(f: SafetyFilter, res: dict, q0: np.ndarray = READY) -> None:
    lim = f.limits
    q, v, a = res["q"], res["v"], res["a"]
    assert np.all(q >= lim.lower - 1e-12) and np.all(q <= lim.upper + 1e-12)
    assert np.all(np.abs(v) <= lim.velocity + 1e-12)
    assert np.all(np.abs(a) <= lim.acceleration + 1e-12)
    # the commands are exactly the double integrator of the returned accelerations
    qp = np.vstack([q0, q[:-1]])
    vp = np.vstack([np.zeros(7), v[:-1]])
    np.testing.assert_allclose(q, qp + vp * DT + 0.5 * a * DT * DT, atol=1e-12)
    np.testing.assert_allclose(v, vp + a * DT, atol=1e-12)


def min_clearance(robot: RobotModel, q: np.ndarray, table_z=None, obstacles=(), box=None):
    p = robot.sphere_positions(q)[robot.moving]
    r = robot.sphere_radii[robot.moving]
    out = [np.inf]
    if table_z is not None:
        out.append(np.min(p[:, 2] - r - table_z))
    for o in obstacles:
        out.append(np.min(np.linalg.norm(p - o.center, axis=1) - r - o.radius))
    if box is not None:
        out.append(np.min(np.concatenate([p - r[:, None] - box[0], box[1] - p - r[:, None]])))
    return min(out)


def test_config_validation() -> None:
    base = safety_config()
    for kwargs, match in [
        ({"safety_mode": "lqr"}, "safety_mode"), ({"control_rate_hz": 0}, "control_rate_hz"),
        ({"mpc_horizon": 1}, "mpc_horizon"), ({"mpc_horizon": 60}, "mpc_horizon"),
        ({"mpc_inputs": 11}, "mpc_inputs"),
        ({"barrier_gamma": 0.0}, "barrier_gamma"), ({"velocity_scale": 1.2}, "velocity_scale"),
        ({"singularity": (0.01, 0.02)}, "singularity"), ({"position_margin": -1}, "margin"),
        ({"max_iter": 0}, "max_iter"), ({"joint_weights": (1.0, -1.0)}, "joint_weights"),
        ({"barrier_slots": 0}, "barrier_slots"), ({"table_z": float("nan")}, "table_z"),
    ]:
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(base, **kwargs)


def test_reset_state_and_errors(robot: RobotModel) -> None:
    f = SafetyFilter(robot, safety_config(**LIMITS))
    with pytest.raises(RuntimeError, match="reset"):
        f.step(READY)
    with pytest.raises(RuntimeError, match="reset"):
        _ = f.state
    f.reset(READY, np.full(7, 0.1))
    q, v, a = f.state
    np.testing.assert_array_equal(q, READY)
    np.testing.assert_array_equal(v, 0.1)
    np.testing.assert_array_equal(a, 0.0)
    with pytest.raises(ValueError, match="6 values, expected 7"):
        f.reset(READY[:6])
    with pytest.raises(ValueError, match="not finite"):
        f.reset(np.full(7, np.nan))
    outside = READY.copy()
    outside[3] = -0.01  # joint 4's upper limit is 0, tightened to -0.03
    with pytest.raises(ValueError, match="panda_joint4"):
        f.reset(outside)
    with pytest.raises(ValueError, match="velocities above"):
        f.reset(READY, np.full(7, 5.0))
    near = READY.copy()
    near[0] = f.limits.upper[0] - 0.01
    with pytest.raises(ValueError, match="too fast to stop"):
        f.reset(near, np.array([1.9, 0, 0, 0, 0, 0, 0]))
    assert f.limits.upper[3] == pytest.approx(-0.03)


def test_tracks_a_smooth_reference(robot: RobotModel) -> None:
    f = make(robot, table_z=None)
    t = np.arange(300) * DT
    amp = np.array([0.4, 0.3, 0.4, 0.3, 0.4, 0.3, 0.4])
    w = 2 * np.pi * 0.5
    qr = READY + amp * np.sin(w * t)[:, None]
    vr = amp * w * np.cos(w * t)[:, None]
    ar = -amp * w * w * np.sin(w * t)[:, None]
    f.reset(qr[0], vr[0])
    errs = []
    for k in range(1, len(t)):
        r = f.step(qr[k], vr[k], ar[k])
        assert r.status == "ok"
        errs.append(np.max(np.abs(r.positions - qr[k])))
    assert max(errs) < 1e-3


def test_step_to_a_target_within_limits(robot: RobotModel) -> None:
    f = make(robot, table_z=None)
    target = READY + np.array([0.8, 0.0, -0.8, 0.0, 0.8, 0.0, -1.0])
    res = run(f, [target] * 250)
    assert_within_limits(f, res)
    np.testing.assert_allclose(res["q"][-1], target, atol=1e-3)
    # saturated approach without overshoot worth the name
    over = (res["q"][:, 0] - target[0]).max()
    assert over < 5e-3
    # jerk stays within its limit (no conflict in this motion)
    jerk = np.abs(np.diff(np.vstack([np.zeros(7), res["a"]]), axis=0)) / DT
    assert np.all(jerk <= f.limits.jerk + 1e-6)
    assert any(res["int"])  # the saturated phase is an intervention


def test_position_limit_is_a_viable_barrier(robot: RobotModel) -> None:
    f = make(robot, table_z=None)
    target = READY.copy()
    target[0] = 5.0  # far beyond joint 1's limit
    res = run(f, [target] * 300)
    assert_within_limits(f, res)
    # it settles on the limit without chattering
    assert res["q"][-1, 0] <= f.limits.upper[0]
    assert res["q"][-1, 0] >= f.limits.upper[0] - 1e-6
    assert np.all(np.abs(res["v"][-50:, 0]) < 1e-6)
    assert any("joint limits on panda_joint1" in r for r in res["reason"])


def test_table_plane(robot: RobotModel) -> None:
    f = make(robot, table_z=0.1)
    target = READY.copy()
    target[1] = 1.2  # lean forward and down, through the table
    res = run(f, [target] * 250)
    assert_within_limits(f, res)
    clear = [min_clearance(robot, q, table_z=0.1) for q in res["q"]]
    assert min(clear) >= -1e-3
    assert min(clear) < 0.03  # it did get close: the barrier was what stopped it
    assert any("floor" in r for r in res["reason"])


def test_workspace_box(robot: RobotModel) -> None:
    box = (np.array([-0.8, -0.8, -0.5]), np.array([0.45, 0.8, 1.2]))
    f = make(robot, table_z=None, workspace_min=tuple(box[0]), workspace_max=tuple(box[1]))
    target = READY.copy()
    target[1] = 0.6  # reach forward
    res = run(f, [target] * 250)
    assert_within_limits(f, res)
    clear = [min_clearance(robot, q, box=box) for q in res["q"]]
    assert min(clear) >= -1e-3
    assert any("x_max" in r for r in res["reason"])


def test_keep_out_sphere(robot: RobotModel) -> None:
    obstacle = Sphere(np.array([0.55, 0.0, 0.5]), 0.08, "mug")
    f = make(robot, table_z=None, obstacles=[obstacle])
    target = READY.copy()
    target[1] = 0.6
    target[3] = -1.6  # extend towards x = 0.6 through the mug
    res = run(f, [target] * 250)
    assert_within_limits(f, res)
    clear = [min_clearance(robot, q, obstacles=[obstacle]) for q in res["q"]]
    assert min(clear) >= -1e-3
    assert any("mug:" in r for r in res["reason"])
    # without the obstacle the same reference runs through it
    free = run(make(robot, table_z=None), [target] * 250)
    assert min(min_clearance(robot, q, obstacles=[obstacle]) for q in free["q"]) < -0.02


def test_obstacles_change_while_running(robot: RobotModel) -> None:
    f = make(robot, table_z=None)
    target = READY.copy()
    target[1] = 0.6
    target[3] = -1.6
    run(f, [target] * 5)
    obstacle = Sphere(np.array([0.55, 0.0, 0.5]), 0.08, "late")
    f.set_obstacles([obstacle])
    rows = f.constraint_count
    res = run(f, [target] * 200)
    assert min(min_clearance(robot, q, obstacles=[obstacle]) for q in res["q"]) >= -1e-3
    # a moved and a grown obstacle take effect at the next tick; the row count stays
    f.set_obstacles([Sphere(np.array([0.6, 0.0, 0.5]), 0.05, "late")])
    assert f.constraint_count == rows
    f.set_obstacles([obstacle, Sphere(np.array([0.0, 0.6, 0.4]), 0.05, "b")])
    assert f.constraint_count > rows
    with pytest.raises(ValueError, match="radius"):
        f.set_obstacles([Sphere(np.zeros(3), -1.0, "bad")])


def test_self_collision_pairs(robot: RobotModel) -> None:
    folded = np.array([0.0, 0.3, 0.0, -3.0, 0.0, 0.5, 0.785])
    pairs = [("panda_hand", "panda_link1"), ("panda_hand", "panda_link2")]
    f = make(robot, table_z=None, self_collision_pairs=pairs)
    res = run(f, [folded] * 300)
    assert_within_limits(f, res)
    groups = np.array(robot.sphere_groups)

    def gap(q: np.ndarray) -> float:
        p = robot.sphere_positions(q)
        ia = np.flatnonzero(groups == "panda_hand")
        ib = np.flatnonzero((groups == "panda_link1") | (groups == "panda_link2"))
        d = np.linalg.norm(p[ia][:, None] - p[ib][None], axis=2)
        return float(np.min(d - robot.sphere_radii[ia][:, None] - robot.sphere_radii[ib][None]))

    assert min(gap(q) for q in res["q"]) >= -1e-3
    assert any("self:panda_hand" in r for r in res["reason"])
    free = run(make(robot, table_z=None), [folded] * 300)
    assert gap(free["q"][-1]) < -0.05
    with pytest.raises(ValueError, match="no spheres"):
        SafetyFilter(robot, safety_config(self_collision_pairs=[("panda_hand", "nothing")]))


def test_singularity_slow_down_and_stop(robot: RobotModel) -> None:
    f = make(robot, table_z=None, singularity=(0.02, 0.005))
    target = READY.copy()
    target[3] = -0.35  # through a wrist singularity near q4 = -0.5
    res = run(f, [target] * 300)
    assert_within_limits(f, res)
    w = np.array([robot.manipulability(q) for q in res["q"]])
    # slowed down from 0.02 on, it stops close to the hard threshold (what is left of the speed
    # at 0.005 is braked away), short of the singularity near q4 = -0.5 (w = 0.003 there)
    assert w.min() >= 0.5 * 0.005
    assert w[-1] < 0.02
    np.testing.assert_allclose(res["v"][-1], 0.0, atol=1e-9)
    assert any("singularity" in r for r in res["reason"])
    # moving away from the singularity is not slowed down
    back = run(f, [READY] * 250)
    np.testing.assert_allclose(back["q"][-1], READY, atol=1e-3)


def test_brake_profile(robot: RobotModel) -> None:
    f = make(robot, table_z=None)
    target = READY + np.array([1.0, 0.5, -1.0, 0.5, 1.0, -0.5, 1.0])
    run(f, [target] * 25)
    _, v0, _ = f.state
    assert np.max(np.abs(v0)) > 0.5
    res = {"q": [], "v": [], "a": [], "status": []}
    for _ in range(40):
        r = f.brake("operator stop")
        assert r.reason == "operator stop" and r.intervened
        for key, val in (("q", r.positions), ("v", r.velocities), ("a", r.accelerations),
                         ("status", r.status)):
            res[key].append(val)
    v = np.abs(np.vstack([v0, np.array(res["v"])]))
    assert np.all(np.diff(v, axis=0) <= 1e-15)  # monotone deceleration on every joint
    assert np.all(np.abs(np.array(res["a"])) <= f.limits.acceleration + 1e-12)
    stop_ticks = np.max(np.abs(v0) / f.limits.acceleration) / DT
    assert res["status"][0] == "braking"
    assert res["status"][-1] == "holding"
    assert res["status"].index("holding") <= int(np.ceil(stop_ticks)) + 2
    q = np.array(res["q"])
    assert np.all(q >= f.limits.lower) and np.all(q <= f.limits.upper)
    np.testing.assert_array_equal(q[-1], q[-2])


@pytest.mark.parametrize("mode", ["cbf", "mpc"])
def test_bad_references_brake_with_a_reason(robot: RobotModel, mode: str) -> None:
    f = make(robot, safety_mode=mode)
    run(f, [READY + 0.3] * 10)
    for ref, v_ref, why in [
        (np.full(7, np.nan), None, "q_ref is not finite"),
        (READY[:5], None, "q_ref has 5 values"),
        (READY, np.full(7, np.inf), "v_ref is not finite"),
        ("abc", None, "q_ref is not numeric"),
    ]:
        r = f.step(ref, v_ref)
        assert r.status in ("braking", "holding")
        assert why in r.reason
        assert np.all(np.isfinite(r.positions))
    if mode == "mpc":
        r = f.step(READY, future_ref=np.zeros((3, 6)))
        assert "future_ref has shape" in r.reason


def test_update_config(robot: RobotModel) -> None:
    f = make(robot)
    f.update_config(barrier_gamma=0.3, sphere_margin=0.02, max_iter=100)
    assert f.config.barrier_gamma == 0.3
    f.update_config(table_z=None, workspace_min=(-1, -1, -1), workspace_max=(1, 1, 1.5))
    with pytest.raises(ValueError, match="cannot change while running"):
        f.update_config(safety_mode="mpc")
    with pytest.raises(ValueError, match="unknown"):
        f.update_config(colour="red")
    with pytest.raises(ValueError, match="barrier_gamma"):
        f.update_config(barrier_gamma=2.0)
    assert f.config.barrier_gamma == 0.3
    with pytest.raises(ValueError, match="workspace_min"):
        f.set_workspace((1, 1, 1), (0, 0, 0), None)


def test_constraint_count(robot: RobotModel) -> None:
    obstacles = [Sphere(np.array([0.5, 0.3 * k, 0.2]), 0.05, f"o{k}") for k in range(3)]
    f = make(robot, obstacles=obstacles, workspace_min=(-1, -1, -1), workspace_max=(1, 1, 1.5))
    # 7 box + 14 split rows, and per moving sphere (18 on the arm and hand, 2 per finger)
    # 6 faces + 3 obstacles
    assert f.constraint_count == 21 + 22 * 9
    assert f.qp_rows == 21 + f.config.barrier_slots
    mpc = make(robot, safety_mode="mpc", obstacles=obstacles)
    assert mpc.constraint_count > f.constraint_count


def test_mpc_tracks_with_future_reference(robot: RobotModel) -> None:
    f = make(robot, safety_mode="mpc", table_z=None)
    t = np.arange(200 + f.config.mpc_horizon) * DT
    qr = READY + 0.3 * np.sin(2 * np.pi * 0.5 * t)[:, None]
    errs = []
    for k in range(200):
        r = f.step(qr[k], future_ref=qr[k:k + f.config.mpc_horizon])
        assert r.status == "ok", r.reason
        errs.append(np.max(np.abs(r.positions - qr[k])))
    assert max(errs[50:]) < 5e-3


def test_mpc_jerk_rows_only_where_they_can_bind(robot: RobotModel) -> None:
    # At 100 Hz the Panda's jerk limit exceeds 2 amax / dt: two accelerations inside their boxes
    # always satisfy it, so the horizon carries no jerk rows. With a tight jerk limit it does.
    # (Jerk yields where it conflicts with stopping inside the limits, so it is not asserted.)
    loose = make(robot, safety_mode="mpc", table_z=None)
    assert np.all(loose.limits.jerk * DT >= 2 * loose.limits.acceleration)
    tight = make(robot, safety_mode="mpc", table_z=None, jerk_scale=0.02)
    assert np.any(tight.limits.jerk * DT < 2 * tight.limits.acceleration)
    extra = robot.nq * (tight.config.mpc_inputs - 1)  # one row between consecutive blocks
    assert tight.qp_rows == loose.qp_rows + extra
    target = READY + np.array([0.5, -0.3, 0.4, 0.3, -0.5, 0.3, 0.6])
    res = run(tight, [target] * 300)
    assert_within_limits(tight, res)
    assert all(s == "ok" for s in res["status"])
    np.testing.assert_allclose(res["q"][-1], target, atol=2e-3)


def test_mpc_move_blocks() -> None:
    assert mpc_blocks(10, 5).tolist() == [1, 2, 2, 2, 3]
    assert mpc_blocks(10, 4).tolist() == [1, 3, 3, 3]
    assert mpc_blocks(10, 10).tolist() == [1] * 10
    for horizon in range(2, 25):
        for inputs in range(2, horizon + 1):
            b = mpc_blocks(horizon, inputs)
            # the command's tick alone; every tick in exactly one block; longer blocks last
            assert len(b) == inputs and b.sum() == horizon and b[0] == 1
            assert np.all(np.diff(b[1:]) >= 0)


@pytest.mark.parametrize("inputs", [5, 10])
def test_mpc_keep_out_sphere_and_refactorisation(robot: RobotModel, inputs: int) -> None:
    """Far from every barrier the MPC's matrix stays as it is (no OSQP refactorisation); near
    the mug its barrier rows engage, and the mug is kept out with both input layouts."""
    far = Sphere(np.array([0.0, 0.0, 2.5]), 0.05, "far")
    f = make(robot, safety_mode="mpc", mpc_inputs=inputs, table_z=None, obstacles=[far])
    base = f._qp.matrix_updates
    res = run(f, [READY + 0.1] * 60)
    assert_within_limits(f, res)
    assert f._qp.matrix_updates == base
    mug = Sphere(np.array([0.55, 0.0, 0.5]), 0.08, "mug")
    f.set_obstacles([mug])
    target = READY.copy()
    target[1] = 0.6
    target[3] = -1.6  # extend towards x = 0.6 through the mug
    terminal = 0
    out = []
    for _ in range(250):
        r = f.step(target)
        terminal = max(terminal, f._term_used)
        out.append(r.positions)
    assert f._qp.matrix_updates > base and terminal > 0
    assert min(min_clearance(robot, q, obstacles=[mug]) for q in out) >= -1e-3


def test_follow_continuation_commits_the_certified_stop(robot: RobotModel) -> None:
    """Missed control slots on a streamed trajectory: the filter commits the continuation the
    arm's controller ran, and the next tick goes on from its last state."""
    f = make(robot)
    for _ in range(20):
        f.step(READY + 0.3)
    v = f.state[1]
    assert np.abs(v).max() > 0.05
    plan = f.continuation(3)
    followed = f.follow_continuation(2)
    np.testing.assert_array_equal(followed, plan[:2])
    q2, v2, a2 = f.state
    np.testing.assert_array_equal(q2, plan[1][0])
    np.testing.assert_array_equal(v2, plan[1][1])
    np.testing.assert_array_equal(a2, plan[1][2])
    r = f.step(READY + 0.3)
    step = r.positions - q2
    np.testing.assert_allclose(step, 0.5 * (v2 + r.velocities) * DT, atol=1e-12)
