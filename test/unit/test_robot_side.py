"""The simulated robot side: 1 kHz controllers and the FR3's commanded-signal checks (ROS-free)."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.robot_side import (
    DT,
    FR3_LIMITS,
    ForwardController,
    LimitMonitor,
    TrajectoryController,
    TrajectoryPoint,
)

Q0 = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.6, 0.8])


def _run(ctrl: object, monitor: LimitMonitor, t0: float, t1: float, feed=None):
    """Step the 1 kHz cycle from t0 to t1; `feed(k, t)` may send commands. Returns (reflex, qs)."""
    qs = []
    for k in range(round((t1 - t0) / DT)):
        t = t0 + k * DT
        if feed is not None:
            feed(k, t)
        q = ctrl.sample(t)
        qs.append(q)
        reflex = monitor.check(q, t)
        if reflex is not None:
            return reflex, np.array(qs)
    return None, np.array(qs)


def test_100hz_staircase_into_forward_is_a_reflex() -> None:
    fwd = ForwardController(Q0)
    mon = LimitMonitor(ARM_JOINTS)
    mon.seed(Q0)
    ramp = np.eye(7)[0] * 0.05  # 0.05 rad/s on joint 1, one position per 10 ms

    def feed(k: int, t: float) -> None:
        if k % 10 == 0:
            fwd.command(Q0 + ramp * t, t)

    reflex, _ = _run(fwd, mon, 0.0, 1.0, feed)
    assert reflex is not None
    assert reflex.joint == "panda_joint1"
    assert reflex.quantity == "acceleration"
    assert reflex.value == pytest.approx(500.0)
    assert reflex.limit == FR3_LIMITS.a_max[0]


def test_smooth_quintic_is_accepted_and_arrives() -> None:
    traj = TrajectoryController(Q0)
    mon = LimitMonitor(ARM_JOINTS)
    mon.seed(Q0)
    goal = Q0 + 0.3
    traj.command([TrajectoryPoint(1.0, goal, np.zeros(7), np.zeros(7))], now=0.0)
    reflex, qs = _run(traj, mon, 0.0, 1.5)
    assert reflex is None
    np.testing.assert_allclose(qs[-1], goal, atol=1e-12)


def test_position_limit_is_a_reflex() -> None:
    mon = LimitMonitor(ARM_JOINTS)
    q = Q0.copy()
    q[3] = -0.1  # above joint 4's q_max of -0.1518
    mon.seed(q)
    reflex = mon.check(q, 0.0)
    assert reflex is not None and (reflex.joint, reflex.quantity) == ("panda_joint4", "position")


def test_new_message_replaces_the_rest_of_the_old_one_when_it_arrives() -> None:
    """Humble's joint_trajectory_controller: a new message replaces the old one when it arrives
    (Trajectory::set_point_before_trajectory_msg at that time, with the commanded state); until
    its first point is due (header stamp + time_from_start) it interpolates towards it."""
    traj = TrajectoryController(Q0)
    far = Q0 + 1.0
    traj.command([TrajectoryPoint(2.0, far, np.zeros(7), np.zeros(7))], now=0.0)
    for k in range(201):
        traj.sample(k * DT)
    at_arrival = traj.sample_state(0.2)[0]
    old_later = traj.sample_state(0.5)[0]
    # Received at 0.2 s, stamped 0.5 s, first point 1.0 s later.
    back = Q0 + 0.1
    traj.command([TrajectoryPoint(1.0, back, np.zeros(7), np.zeros(7))], now=0.2, start_time=0.5)
    np.testing.assert_allclose(traj.sample_state(0.2)[0], at_arrival)  # continuous at arrival
    assert np.all(np.abs(traj.sample_state(0.5)[0] - old_later) > 1e-3)  # the old one is gone
    np.testing.assert_allclose(traj.sample_state(1.5)[0], back)
    np.testing.assert_allclose(traj.sample_state(3.0)[0], back)  # the old goal never comes back


def test_humble_repeats_the_previous_command_when_a_message_replaces_a_motion() -> None:
    """Humble's update() places the point before the message (the previous cycle's command) at
    the current cycle's time, so a replacement whose first point is still ahead stalls the
    command for one cycle: -v / 1 ms of acceleration while moving (ros2_controllers PR #780)."""
    traj = TrajectoryController(Q0)
    mon = LimitMonitor(ARM_JOINTS)
    mon.seed(Q0)
    goal = Q0 + 0.2
    traj.command([TrajectoryPoint(1.0, goal, np.zeros(7), np.zeros(7))], now=0.0)
    reflex, qs = _run(traj, mon, 0.0, 0.5)
    assert reflex is None
    # Re-send the rest of the same motion, due 0.5 s from now: the first sample repeats.
    traj.command([TrajectoryPoint(0.5, goal, np.zeros(7), np.zeros(7))], now=0.5)
    reflex, again = _run(traj, mon, 0.5, 1.2)
    np.testing.assert_array_equal(again[0], qs[-1])  # the stall
    assert reflex is not None and reflex.quantity == "acceleration" and reflex.time == 0.5
    assert reflex.value == pytest.approx(-1000.0 * (qs[-1][0] - qs[-2][0]) / DT, rel=1e-3)


def test_a_message_already_due_continues_the_same_splines_without_a_reflex() -> None:
    """The message's own splines take over when its first point is already due at arrival: a
    replacement that repeats the old message's points (same times, same states) is seamless."""
    traj = TrajectoryController(Q0)
    mon = LimitMonitor(ARM_JOINTS)
    mon.seed(Q0)
    ts = np.arange(0.0, 1.01, 0.1)
    s = ts / 1.0
    path = [TrajectoryPoint(float(t), Q0 + 0.2 * (10 * x**3 - 15 * x**4 + 6 * x**5),
                            np.full(7, 0.2 * (30 * x**2 - 60 * x**3 + 30 * x**4)),
                            np.full(7, 0.2 * (60 * x - 180 * x**2 + 120 * x**3)))
            for t, x in zip(ts, s, strict=True)]  # fmt: skip
    traj.command(path, now=0.0, start_time=1e-9)
    reflex, qs = _run(traj, mon, 0.0, 0.5)
    assert reflex is None
    traj.command(path[3:], now=0.5, start_time=1e-9)  # first point due at 0.3 s: past
    reflex, again = _run(traj, mon, 0.5, 1.2)
    assert reflex is None
    np.testing.assert_allclose(again[0] - qs[-1], again[1] - again[0], atol=1e-9)
    np.testing.assert_allclose(again[-1], Q0 + 0.2, atol=1e-12)


def test_cmd_timeout_counts_from_the_trajectory_end_and_holds_at_rest() -> None:
    traj = TrajectoryController(Q0, cmd_timeout=0.1)
    mid = Q0 + 0.05
    # A streamed message whose last point still moves (allow_nonzero_velocity_at_trajectory_end),
    # then silence: the command holds, still, after the end plus cmd_timeout.
    v = np.full(7, 0.1)
    traj.command([TrajectoryPoint(0.5, mid, v, np.zeros(7))], now=0.0)
    qs = [traj.sample(k * DT) for k in range(1000)]
    assert traj.timed_out
    np.testing.assert_allclose(qs[650], qs[999])
    np.testing.assert_allclose(qs[999], mid)
    # A fresh message clears the timeout and moves again.
    far = Q0 + 0.5
    traj.command([TrajectoryPoint(1.0, far, np.zeros(7), np.zeros(7))], now=1.0)
    assert not traj.timed_out
    traj.sample(1.0)  # a zero stamp: the message starts at the cycle that takes it
    assert not np.allclose(traj.sample(1.5), qs[999])


def test_cmd_timeout_does_not_cut_a_running_trajectory() -> None:
    traj = TrajectoryController(Q0, cmd_timeout=0.1)
    goal = Q0 + 0.3
    traj.command([TrajectoryPoint(2.0, goal, np.zeros(7), np.zeros(7))], now=0.0)
    qs = [traj.sample(k * DT) for k in range(2050)]
    assert not traj.timed_out
    np.testing.assert_allclose(qs[-1], goal)


def test_forward_has_no_timeout() -> None:
    fwd = ForwardController(Q0)
    fwd.command(Q0 + 0.01, 0.0)
    np.testing.assert_allclose(fwd.sample(100.0), Q0 + 0.01)


def test_non_increasing_times_are_rejected() -> None:
    traj = TrajectoryController(Q0)
    pts = [TrajectoryPoint(0.2, Q0), TrajectoryPoint(0.2, Q0)]
    with pytest.raises(ValueError):
        traj.command(pts, now=0.0)


def test_a_late_single_point_is_a_jump_and_a_reflex() -> None:
    """The one-point, time_from_start 0 message: the real controller jumps to it; so does ours."""
    traj = TrajectoryController(Q0)
    mon = LimitMonitor(ARM_JOINTS)
    mon.seed(Q0)
    for k in range(10):
        mon.check(traj.sample(k * DT), k * DT)
    target = Q0 + 0.01
    traj.command([TrajectoryPoint(0.0, target)], now=0.01)
    reflex, _ = _run(traj, mon, 0.01, 0.02)
    np.testing.assert_allclose(traj.sample(0.02), target)
    assert reflex is not None and reflex.quantity == "velocity"  # 0.01 rad in 1 ms: 10 rad/s
