"""The streamed trajectory against Humble's joint_trajectory_controller and the FR3's checks.

The mechanism behind every reflex of the earlier streams: a message whose first point is still
ahead when the controller takes it makes Humble's controller repeat its previous command for a
cycle; so does any message whose splines around its arrival are not the previous message's.
These tests run streams through sim/robot_side.py's controller and limit monitor at 1 kHz with
random transport delay and missed control ticks (ROS-free)."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.control.braking import brake_acceleration
from diffusion_controller.control.stream import StreamPoint, TrajectoryStream
from diffusion_controller.control.types import Command
from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.robot_side import (
    DT,
    LimitMonitor,
    Reflex,
    RobotSide,
    TrajectoryController,
    TrajectoryPoint,
)

P = 0.01
Q0 = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.6, 0.8])
A_MAX = 5.0  # the filter's acceleration limit, rad/s^2 (sim.yaml-like scales)


def _brake_plan(q: np.ndarray, v: np.ndarray, steps: int = 60) -> np.ndarray:
    """The filter's certified continuation: braking at the acceleration limit to rest."""
    rows = []
    b = np.full(7, A_MAX)
    for _ in range(steps):
        u = brake_acceleration(v, b, P)
        q, v = q + v * P + 0.5 * u * P * P, v + u * P
        v[np.abs(v) < 1e-12] = 0.0
        rows.append(np.stack([q, v, u]))
    return np.array(rows)


def _wander(rng: np.random.Generator, k: int, every: int, goal: np.ndarray, q: np.ndarray,
            v: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, ...]:
    """One tick of a filter-like arm that wanders (a new goal every `every` ticks after the
    first 10, jerk-limited acceleration towards it): (goal, q, v, a) after the tick."""
    if k > 10:
        if k % every == 0:
            goal = Q0 + rng.uniform(-0.3, 0.3, 7)
        target = np.clip(30 * (goal - q) - 10 * v, -A_MAX, A_MAX)
        a = np.clip(a + np.clip(target - a, -2.0, 2.0), -A_MAX, A_MAX)
    return goal, q + v * P + 0.5 * a * P * P, v + a * P, a


def _commands(seed: int, ticks: int, miss: float) -> list[Command]:
    """A filter-like command stream: one acceleration per tick, |a| <= A_MAX, changing by at
    most 2 rad/s^2 per tick, towards random goals; a missed tick commits the continuation's
    first state (what the loop does with follow_on_miss)."""
    rng = np.random.default_rng(seed)
    q, v, a = Q0.copy(), np.zeros(7), np.zeros(7)
    goal = Q0
    out: list[Command] = []
    stamp = 1000.0
    for k in range(ticks):
        stamp += P
        if k > 10 and out and rng.random() < miss:
            qn, vn, an = _brake_plan(q, v, 1)[0]
            out.append(Command(stamp, qn, vn, an))  # a missed slot, no plan of its own
            q, v, a = qn, vn, an
            continue
        goal, q, v, a = _wander(rng, k, 20, goal, q, v, a)
        out.append(Command(stamp + rng.uniform(0.0, 0.003), q.copy(), v.copy(), a.copy(),
                           _brake_plan(q, v)))  # fmt: skip
    return out


def _as_points(points: list[StreamPoint]) -> tuple[list[TrajectoryPoint], float]:
    first = points[0].time
    return [TrajectoryPoint(p.time - first, p.positions, p.velocities, p.accelerations)
            for p in points], first  # fmt: skip


def _run_arm(
    messages: list[tuple[float, list[TrajectoryPoint], float]], until: float,
    start: np.ndarray = Q0,
) -> tuple[Reflex | None, dict[float, np.ndarray]]:
    """1 kHz cycles from before the first arrival to `until`, the controller holding `start`
    at first: each message taken by the first cycle at or after its arrival. Returns the first
    reflex and the commanded q by cycle."""
    messages = sorted(messages, key=lambda m: m[0])
    jtc = TrajectoryController(start)
    mon = LimitMonitor(ARM_JOINTS)
    mon.seed(start)
    t, i, out = round(messages[0][0], 3) - 0.02, 0, {}
    while t < until:
        while i < len(messages) and messages[i][0] <= t:
            jtc.command(messages[i][1], now=t, start_time=messages[i][2])
            i += 1
        q = jtc.sample(t)
        out[round(t, 3)] = q
        reflex = mon.check(q, t)
        if reflex is not None:
            return reflex, out
        t += DT
    return None, out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("miss", [0.0, 0.05])
def test_stream_through_humbles_controller_has_no_reflex(seed: int, miss: float) -> None:
    """Random transport delay up to the stream's budget, missed ticks, then silence; the arm's
    controller holding a little away from the first command (a loop seeded from a measurement
    that sagged): no reflex, and the arm passes through every command at its fixed time."""
    rng = np.random.default_rng(100 + seed)
    stream = TrajectoryStream(P, lead=0.05)
    messages = []
    cmds = _commands(seed, 300, miss)
    times = []
    for cmd in cmds:
        stream.push(cmd)
        times.append(stream.newest_time)
        if cmd.plan is None:
            continue  # a missed tick sends nothing
        points = stream.points()
        if not points:
            continue  # the run's bridge
        sent = cmd.stamp - P + 0.002
        arrival = sent + rng.uniform(0.0, stream.lead - 3 * P)
        messages.append((arrival, *_as_points(points)))
    assert stream.restarts == 0
    reflex, qs = _run_arm(messages, cmds[-1].stamp + 1.0, Q0 + 5e-4)
    assert reflex is None, reflex
    for t_k, cmd in zip(times[:-2], cmds[:-2], strict=True):  # every command, at its time
        t = round(t_k, 3)
        if abs(t_k - t) < 1e-9:
            np.testing.assert_allclose(qs[t], cmd.positions, atol=1e-9)


def test_a_message_due_ahead_of_its_arrival_is_the_reflex() -> None:
    """The earlier stream, the previous and this command due `lead` after the command: Humble's
    controller takes each message before its first point and repeats its last command."""
    rng = np.random.default_rng(7)
    cmds = _commands(3, 200, 0.0)
    messages = []
    prev = None
    for cmd in cmds:
        states = ([prev] if prev is not None else []) + [cmd]
        first = states[0].stamp + 0.05
        pts = [TrajectoryPoint(k * P, c.positions, c.velocities, c.accelerations)
               for k, c in enumerate(states)]  # fmt: skip
        pts += [TrajectoryPoint((len(states) + k) * P, *row) for k, row in enumerate(cmd.plan)]
        messages.append((cmd.stamp - P + rng.uniform(0.002, 0.01), pts, first))
        prev = cmd
    reflex, _ = _run_arm(messages, cmds[-1].stamp + 0.5)
    assert reflex is not None and reflex.quantity in ("acceleration", "jerk")


def test_restart_when_late_and_free_reanchor_at_rest() -> None:
    stream = TrajectoryStream(P, lead=0.05)
    assert stream.past == 5 + 4 + 1 and stream.budget == pytest.approx(0.02)
    hold = stream.bridge_hold
    rest = Command(10.0, Q0.copy(), np.zeros(7), np.zeros(7), _brake_plan(Q0, np.zeros(7), 3))
    for k in range(12):
        stream.push(Command(10.0 + k * P, Q0.copy(), np.zeros(7), np.zeros(7), rest.plan))
    pts = stream.points()  # the bridge: the first command held `hold` periods
    assert pts[0].time == pytest.approx(10.05)
    assert pts[-4].time == pytest.approx(10.05 + (11 + hold) * P)
    # a short pause at rest (a late tick): the rest is held longer, nothing restarts
    v = np.full(7, 0.1)
    moving = Command(10.25, Q0 + 0.5 * v * P, v, v / P, rest.plan)
    stream.push(moving)
    assert stream.restarts == 0 and stream.reanchors == 1 and stream.lateness == 0.0
    pts = stream.points()
    assert pts[-4].time == pytest.approx(10.30)  # the newest, on time
    assert pts[0].time <= 10.25 - 5 * P + 1e-9  # due before the message is sent
    # a command late while moving (a tick that started late): sent on the grid, counted
    late = Command(10.25 + P + 0.03, moving.positions + v * P, v, np.zeros(7), rest.plan)
    stream.push(late)
    assert stream.restarts == 0 and stream.late == 1
    assert stream.points()[-4].time == pytest.approx(10.31)
    # far later (a stall the loop did not follow): a restart, timed afresh
    stalled = Command(10.55, late.positions + v * P, v, np.zeros(7), rest.plan)
    stream.push(stalled)
    assert stream.restarts == 1 and stream.restart_lateness == pytest.approx(0.28)
    assert stream.points()[0].time == pytest.approx(stalled.stamp + 0.05)
    # a command that does not follow the last one (the loop re-seeded far away): a new run
    jumped = Command(10.55 + P, Q0 + 0.1, np.zeros(7), np.zeros(7), rest.plan)
    stream.push(jumped)
    assert stream.restarts == 1 and len(stream.points()) == 1 + hold + 3
    # after the loop was quiet (disabled), a new run even where it stopped
    again = Command(12.0, jumped.positions, np.zeros(7), np.zeros(7), rest.plan)
    stream.push(again)
    assert len(stream.points()) == 1 + hold + 3 and stream.points() == []


def test_a_resync_close_by_is_reached_by_a_rest_to_rest_spline() -> None:
    """The loop braked to rest and re-seeded from a measurement 2 cm away (the arm's controller
    runs `lead` behind): the run goes on, and the arm's controller moves there without a
    reflex, where a new run would have re-planned from a moving controller."""
    stream = TrajectoryStream(P, lead=0.05)
    messages = []
    rest_plan = _brake_plan(Q0, np.zeros(7), 5)
    stamp = 1000.0
    for k in range(40):
        stamp += P
        at = Q0 if k < 20 else Q0 + 0.02
        plan = rest_plan if k < 20 else _brake_plan(at, np.zeros(7), 5)
        stream.push(Command(stamp, at.copy(), np.zeros(7), np.zeros(7), plan))
        points = stream.points()
        if points:
            messages.append((stamp - P + 0.004, *_as_points(points)))
    assert stream.transitions == 1 and stream.restarts == 0
    reflex, qs = _run_arm(messages, stamp + 1.5)
    assert reflex is None, reflex
    np.testing.assert_allclose(qs[max(qs)], Q0 + 0.02, atol=1e-12)


def test_followed_slots_ahead_of_the_arms_clock_never_trim_what_it_interpolates() -> None:
    """The loop counted missed slots on monotonic time while the arm's clock (a simulator's)
    lagged: it followed 10 slots of the continuation, stamped ahead of the clock, in one tick
    (several times while moving). Trimming the history by those stamps would drop the points
    the arm's controller is still interpolating (the next message's first point ahead: Humble's
    stall, a reflex while moving); the stream trims only by the commands the loop computed."""
    rng = np.random.default_rng(5)
    stream = TrajectoryStream(P, lead=0.1)
    side = RobotSide("trajectory", ARM_JOINTS, Q0)
    q, v, a = Q0.copy(), np.zeros(7), np.zeros(7)
    goal, clock, last = Q0, 1000.0, None
    for k in range(400):
        clock += P
        if last is not None and k % 40 == 25 and np.abs(last.velocities).max() > 0.05:
            for j, (qf, vf, af) in enumerate(last.plan[:10], start=1):  # followed slots
                stream.push(Command(last.stamp + j * P, qf, vf, af))
            q, v, a = (x.copy() for x in last.plan[9])
        goal, q, v, a = _wander(rng, k, 30, goal, q, v, a)
        last = Command(clock + P, q.copy(), v.copy(), a.copy(), _brake_plan(q, v))
        stream.push(last)
        points = stream.points()
        if points:
            pts, first = _as_points(points)
            side.queue(pts, first, clock + 0.002 + rng.uniform(0.0, stream.lead - 3 * P))
        _, reflexes = side.advance(clock, clock + P)
        assert not reflexes, reflexes[0]
    side.advance(clock, clock + 1.0)
    assert side.reflexes == 0, side.last_reflex
    assert side.controller.stalls == 0 and stream.restarts == 0


def test_state_at_is_what_the_arms_controller_commands_and_slots_its_plan() -> None:
    """The stream's reference for a resync: state_at(t) samples its points as Humble's
    controller does; slots() are the newest plan's rows (held at its final rest beyond it)."""
    stream = TrajectoryStream(P, lead=0.05)
    ctrl = TrajectoryController(Q0)
    cmds = _commands(4, 120, 0.0)
    for cmd in cmds:
        stream.push(cmd)
        points = stream.points()
        if points:
            pts, first = _as_points(points)
            ctrl.command(pts, now=cmd.stamp, start_time=first)
    assert stream.running(cmds[-1].stamp + P) and not stream.running(cmds[-1].stamp + 0.5)
    assert not stream.running(cmds[-1].stamp - 1.0)  # the clock stepped back
    last = cmds[-1]
    for t in np.arange(last.stamp - 0.04, last.stamp + 0.3, 0.0013):
        ref = stream.state_at(t)
        assert ref is not None
        for got, want in zip((ref.positions, ref.velocities, ref.accelerations),
                             ctrl.sample_state(t), strict=True):  # fmt: skip
            np.testing.assert_allclose(got, want, atol=1e-9)
    assert stream.slots(last.stamp) == [] and stream.slots(last.stamp - P) == []
    rows = stream.slots(last.stamp + 3 * P + 1e-4)
    assert len(rows) == 3
    for row, want in zip(rows, last.plan[:3], strict=True):
        np.testing.assert_array_equal(np.stack(row), want)
    far = stream.slots(last.stamp + (len(last.plan) + 5) * P)
    np.testing.assert_array_equal(np.stack(far[-1]), last.plan[-1])
    fresh = TrajectoryStream(P, lead=0.05)
    assert fresh.state_at(1000.0) is None and fresh.slots(1000.0) is None
