"""ControlLoop ticked by hand on a controlled clock, with the real safety filter and Panda model.

The arm is an ideal position-controlled one: it reports the last command as its measured state,
which is how a forward position controller behaves to within a tick.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from core_settings import UNIT_DEADLINES, UNIT_HANDOVER, UNIT_LIMITS, safety, scheduler, watchdogs

from diffusion_controller.control.chunk_scheduler import ChunkScheduler
from diffusion_controller.control.loop import (
    BRAKING,
    ESTOPPED,
    HOLDING,
    INACTIVE,
    RUNNING,
    WAITING,
    ControlLoop,
    switch_interval_for,
)
from diffusion_controller.control.types import Chunk, Command
from diffusion_controller.control.watchdogs import Watchdogs

pytest.importorskip("pybullet_data", reason="pybullet_data ships the Panda URDF")
from diffusion_controller.control.panda import panda_urdf_path
from diffusion_controller.control.robot_model import RobotModel
from diffusion_controller.control.safety_filter import SafetyFilter

PANDA_URDF = panda_urdf_path()
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
DT = 0.01
J = 7


@pytest.fixture(scope="module")
def robot() -> RobotModel:
    return RobotModel.from_urdf(PANDA_URDF)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rig:
    """Loop + real filter + an ideal arm that reports back the last command."""

    def __init__(self, robot: RobotModel, **watchdog_overrides) -> None:
        self.clock = Clock()
        self.filter = SafetyFilter(robot, safety(**UNIT_LIMITS, control_rate_hz=100.0))
        self.commands: list[Command] = []
        wd = dict(UNIT_DEADLINES, image_timeout=None, chunk_timeout=0.5)
        wd.update(watchdog_overrides)
        self.loop = ControlLoop(
            self.filter,
            ChunkScheduler(J, scheduler(**UNIT_HANDOVER)),
            Watchdogs(watchdogs(**wd)),
            self.commands.append,
            rate_hz=100.0,
            clock=self.clock,
        )
        self.q = HOME.copy()
        self.v = np.zeros(J)
        self.feed = True
        self.seq = 0

    def step(self, n: int = 1) -> list[Command | None]:
        out = []
        for _ in range(n):
            self.clock.t += DT
            if self.feed:
                self.loop.update_joint_state(self.q, self.v, self.clock.t)
            cmd = self.loop.tick()
            if cmd is not None:
                self.q, self.v = cmd.positions.copy(), cmd.velocities.copy()
            out.append(cmd)
        return out

    def chunk(self, amplitude: float = 0.1, offset: float = 0.0, latency: float = 0.03) -> Chunk:
        """A smooth chunk around HOME computed from an observation `latency` seconds ago."""
        self.seq += 1
        t0 = self.clock.t - latency
        times = t0 + 0.1 * np.arange(16)
        wave = amplitude * np.sin(2 * np.pi * 0.5 * (times - 1000.0))[:, None]
        return Chunk(t0=t0, dt=0.1, positions=HOME + offset + wave * np.ones(J), seq=self.seq)


def within_limits(cmds: list[Command], limits, tol: float = 1e-6) -> bool:
    q = np.array([c.positions for c in cmds])
    v = np.array([c.velocities for c in cmds])
    a = np.array([c.accelerations for c in cmds])
    return bool(
        np.all(q >= limits.lower - tol)
        and np.all(q <= limits.upper + tol)
        and np.all(np.abs(v) <= limits.velocity + tol)
        and np.all(np.abs(a) <= limits.acceleration + tol)
    )


def test_inactive_and_waiting_publish_nothing(robot) -> None:
    rig = Rig(robot)
    assert rig.loop.tick() is None and rig.loop.state == INACTIVE
    rig.loop.set_enabled(True)
    rig.feed = False
    assert rig.step(3) == [None, None, None]
    assert rig.loop.state == WAITING
    assert rig.loop.status().reasons == ("no joint_states received",)
    assert rig.commands == []


def test_start_holds_at_the_measured_state_until_a_chunk(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    cmds = rig.step(5)
    assert all(c is not None for c in cmds)
    assert rig.loop.state == HOLDING
    np.testing.assert_allclose(cmds[-1].positions, HOME, atol=1e-9)
    np.testing.assert_allclose(cmds[-1].velocities, 0.0, atol=1e-12)
    assert "no chunk received" in rig.loop.status().reasons[0]


def test_tracks_chunks_within_limits_and_hands_over_smoothly(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(3)
    cmds = []
    for _ in range(6):  # a new chunk every 0.1 s, each disagreeing a little with the last
        res = rig.loop.submit_chunk(rig.chunk(offset=0.01 * rig.seq))
        assert res.accepted and res.reason == "queued"
        cmds += rig.step(10)
    assert rig.loop.state == RUNNING
    st = rig.loop.status()
    assert st.chunks_accepted == 6 and st.chunks_rejected == 0
    assert st.last_submit.accepted and st.last_submit.dropped_actions >= 1
    assert within_limits(cmds, rig.filter.limits)
    a = np.array([c.accelerations for c in cmds])
    jerk = np.abs(np.diff(a, axis=0)) / DT
    assert jerk.max() <= rig.filter.limits.jerk.max() + 1e-6
    moved = np.abs(cmds[-1].positions - HOME).max()
    assert moved > 0.01  # it really followed the chunks
    assert rig.loop.current_chunk().seq == 6


def test_nan_and_wrong_size_chunks_are_rejected_without_a_jump(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk())
    before = rig.step(20)
    bad = rig.chunk()
    bad.positions[3, 2] = np.nan
    res = rig.loop.submit_chunk(bad)
    assert not res.accepted and "non-finite" in res.reason
    res = rig.loop.submit_chunk(Chunk(rig.clock.t, 0.1, np.zeros((16, 6)), 99))
    assert not res.accepted and "wrong width" in res.reason
    after = rig.step(20)
    cmds = before + after
    assert rig.loop.state == RUNNING
    dq = np.abs(np.diff([c.positions for c in cmds], axis=0))
    assert dq.max() <= rig.filter.limits.velocity.max() * DT + 1e-9
    assert rig.loop.status().chunks_rejected == 2


def test_stale_joint_state_brakes_then_holds_with_reason(robot) -> None:
    rig = Rig(robot, joint_state_timeout=0.05)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    rig.step(30)
    assert rig.loop.state == RUNNING
    rig.feed = False
    states, speeds = [], []
    for _ in range(60):
        cmd = rig.step(1)[0]
        states.append(rig.loop.state)
        speeds.append(np.abs(cmd.velocities).max())
    first = states.index(BRAKING)
    assert 3 <= first <= 7  # 50 ms of silence, then the brake
    assert np.all(np.diff(speeds[first:]) <= 1e-12)  # monotone deceleration
    assert states[-1] == HOLDING and speeds[-1] == 0.0
    assert any("stale joint_states" in r for r in rig.loop.status().reasons)
    # joint states come back, but motion resumes only with a fresh chunk
    rig.feed = True
    rig.step(5)
    assert rig.loop.state == HOLDING
    assert "no fresh chunk" in rig.loop.status().reasons[0]
    rig.loop.submit_chunk(rig.chunk())
    rig.step(2)
    assert rig.loop.state == RUNNING


def test_estop_stops_within_100ms_and_stays_latched_until_reset(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    for _ in range(3):
        rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
        rig.step(10)
    assert np.abs(rig.v).max() > 0.05
    rig.loop.estop()
    cmds = rig.step(10)
    assert np.abs(cmds[-1].velocities).max() == 0.0
    assert rig.loop.state == ESTOPPED and "e-stop latched" in rig.loop.status().reasons
    rig.loop.submit_chunk(rig.chunk())  # chunks keep coming: still latched
    cmds = rig.step(20)
    assert rig.loop.state == ESTOPPED
    assert all(np.abs(c.velocities).max() == 0.0 for c in cmds)
    ok, msg = rig.loop.reset()
    assert ok, msg
    rig.step(1)
    assert rig.loop.state == HOLDING  # needs a chunk newer than the reset
    rig.loop.submit_chunk(rig.chunk())
    rig.step(2)
    assert rig.loop.state == RUNNING


def test_reset_is_refused_while_moving(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    rig.step(30)
    rig.loop.estop()
    rig.step(1)
    if np.abs(rig.v).max() > 1e-3:
        ok, msg = rig.loop.reset()
        assert not ok and "moving" in msg
    rig.step(20)
    assert rig.loop.state == ESTOPPED


def test_exception_in_a_tick_becomes_a_brake(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    rig.step(30)
    original = rig.loop.scheduler.reference

    def broken(now: float):
        raise RuntimeError("injected fault")

    rig.loop.scheduler.reference = broken
    cmds = rig.step(40)
    assert all(c is not None for c in cmds)  # still publishing: brake commands
    st = rig.loop.status()
    assert st.exceptions >= 1 and "injected fault" in st.last_error
    assert np.abs(cmds[-1].velocities).max() == 0.0
    assert within_limits(cmds, rig.filter.limits)
    rig.loop.scheduler.reference = original
    rig.loop.submit_chunk(rig.chunk())
    rig.step(2)
    assert rig.loop.state == RUNNING


def test_pause_and_resume(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk())
    rig.step(10)
    rig.loop.pause()
    rig.step(30)
    assert rig.loop.state == HOLDING and "paused" in rig.loop.status().reasons
    rig.loop.resume()
    rig.loop.submit_chunk(rig.chunk())
    rig.step(2)
    assert rig.loop.state == RUNNING


def test_disable_brakes_to_a_stop_then_goes_quiet(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    rig.step(30)
    rig.loop.set_enabled(False)
    cmds = rig.step(40)
    published = [c for c in cmds if c is not None]
    assert published and np.abs(published[-1].velocities).max() == 0.0
    assert cmds[-1] is None and rig.loop.state == INACTIVE
    # re-enabling starts again from the measured state
    rig.loop.set_enabled(True)
    cmd = rig.step(1)[0]
    np.testing.assert_allclose(cmd.positions, rig.q, atol=1e-9)
    assert rig.loop.state == HOLDING


def test_bad_joint_states_are_rejected_and_counted(robot) -> None:
    rig = Rig(robot)
    assert not rig.loop.update_joint_state(np.full(J, np.nan), None, 1.0)
    assert not rig.loop.update_joint_state(np.zeros(6), None, 1.0)
    assert not rig.loop.update_joint_state(np.zeros(J), None, float("inf"))
    assert rig.loop.update_joint_state(np.zeros(J), None, 2.0)
    assert not rig.loop.update_joint_state(np.zeros(J), None, 1.5)  # older than the last
    st = rig.loop.status()
    assert st.joint_states_rejected == 4 and "older" in st.last_error


def test_a_chunk_waiting_in_the_mailbox_is_superseded(robot) -> None:
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    first, second = rig.chunk(), rig.chunk()
    rig.loop.submit_chunk(first)
    rig.loop.submit_chunk(second)
    rig.step(1)
    st = rig.loop.status()
    assert st.chunks_superseded == 1 and st.chunks_accepted == 1
    assert rig.loop.current_chunk().seq == second.seq


def test_live_filter_changes_run_in_the_loop_thread(robot) -> None:
    rig = Rig(robot)
    seen = []
    rig.loop.post(lambda: seen.append(threading.get_ident()))
    rig.step(1)
    assert seen == [threading.get_ident()]


def test_rate_mismatch_with_the_filter_is_refused(robot) -> None:
    with pytest.raises(ValueError, match="Hz"):
        ControlLoop(
            SafetyFilter(robot, safety(**UNIT_LIMITS, control_rate_hz=100.0)),
            ChunkScheduler(J, scheduler(**UNIT_HANDOVER)),
            Watchdogs(watchdogs(**UNIT_DEADLINES)),
            lambda cmd: None,
            rate_hz=200.0,
        )


def test_thread_keeps_absolute_deadlines_and_counts_missed_ticks(robot) -> None:
    """A slow tick is counted as missed deadlines and followed by no burst of catch-up ticks."""
    stamps: list[float] = []
    slow = {"left": 1}

    def output(cmd: Command) -> None:
        stamps.append(time.monotonic())
        if len(stamps) == 10 and slow["left"]:
            slow["left"] = 0
            time.sleep(0.035)  # overruns three and a half periods once

    filt = SafetyFilter(robot, safety(**UNIT_LIMITS, control_rate_hz=100.0))
    loop = ControlLoop(
        filt,
        ChunkScheduler(J, scheduler(**UNIT_HANDOVER)),
        Watchdogs(watchdogs(**{**UNIT_DEADLINES, "image_timeout": None,
                                  "joint_state_timeout": 2.0})),
        output,
        rate_hz=100.0,
        realtime=True,
    )
    loop.update_joint_state(HOME, None, time.time())
    loop.set_enabled(True)
    loop.start()
    time.sleep(0.4)
    loop.set_enabled(False)
    time.sleep(0.05)
    assert loop.stop(1.0)
    st = loop.status()
    assert st.missed_ticks >= 3
    gaps = np.diff(stamps)
    assert gaps[9] >= 0.035  # the overrun tick's successor waited for a future deadline ...
    assert gaps[10] > 0.005  # ... and was not followed by back-to-back catch-up ticks
    assert st.tick_error_ms["n"] == st.ticks
    # the overrun is logged with when it began (monotonic) and why: a long tick, not a late start
    assert st.recent_overruns and st.recent_overruns[-1] == st.last_overrun
    over = st.recent_overruns[0]
    assert over["tick_ms"] >= 35.0 and over["start_late_ms"] < 35.0 and over["missed"] >= 3
    assert abs(over["t_mono"] - stamps[9]) < 0.035
    assert over["output_ms"] >= 35.0 and over["body_ms"] < 35.0  # the output callback was slow
    assert over["cpu_ms"] < 30.0  # ... and did not run meanwhile (it slept)
    assert "sched_fifo" in st.realtime and "errors" in st.realtime
    assert st.state == INACTIVE
    assert st.since_last_tick_s > 0.0


def test_switch_interval_suggestion() -> None:
    assert switch_interval_for(100.0) == pytest.approx(0.0005)
    assert switch_interval_for(10.0) == pytest.approx(0.005)


def test_mpc_mode_gets_the_future_reference(robot) -> None:
    rig = Rig(robot)
    rig.filter = SafetyFilter(robot, safety(**UNIT_LIMITS, control_rate_hz=100.0,
                                                   safety_mode="mpc", mpc_horizon=8,
                                                   mpc_inputs=5))
    rig.loop = ControlLoop(
        rig.filter,
        ChunkScheduler(J, scheduler(**UNIT_HANDOVER)),
        Watchdogs(watchdogs(**{**UNIT_DEADLINES, "image_timeout": None})),
        rig.commands.append,
        clock=rig.clock,
    )
    rig.loop.set_enabled(True)
    rig.step(2)
    cmds = []
    for _ in range(4):
        rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
        cmds += rig.step(10)
    assert rig.loop.state == RUNNING and rig.loop.status().exceptions == 0
    assert within_limits(cmds, rig.filter.limits)
    assert np.abs(cmds[-1].positions - HOME).max() > 0.01


def test_chunk_exhaustion_slows_to_a_hold_with_reason(robot) -> None:
    rig = Rig(robot, chunk_timeout=None)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    reasons = []
    for _ in range(300):
        rig.step(1)
        reasons.append(rig.loop.status().reasons)
    assert ("chunk exhausted",) in reasons
    assert rig.loop.state == HOLDING and rig.loop.status().reasons == ("chunk exhausted",)
    assert np.abs(rig.v).max() == 0.0


def test_stale_image_and_tracking_error_brake(robot) -> None:
    rig = Rig(robot, image_timeout=0.2, tracking_error_limit=0.1)
    rig.loop.set_enabled(True)
    rig.loop.note_image(rig.clock.t)
    rig.step(2)
    rig.loop.note_image(rig.clock.t)
    rig.loop.submit_chunk(rig.chunk())
    rig.step(5)
    assert rig.loop.state == RUNNING
    rig.step(30)  # no new image for 0.3 s
    assert rig.loop.state in (BRAKING, HOLDING)
    assert any("stale image" in r for r in rig.loop.status().reasons)

    rig = Rig(robot, tracking_error_limit=0.1)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk())
    rig.step(5)
    rig.q = rig.q + np.array([0, 0, 0, 0.15, 0, 0, 0])  # the arm is pushed away
    rig.step(1)
    assert rig.loop.state in (BRAKING, HOLDING)
    assert "tracking error" in rig.loop.status().reasons[0]


def test_refuses_to_start_outside_the_limits(robot) -> None:
    rig = Rig(robot)
    rig.q = HOME.copy()
    rig.q[3] = 0.5  # panda_joint4's upper limit is 0.0
    rig.loop.set_enabled(True)
    assert rig.step(3) == [None, None, None]
    assert rig.loop.state == WAITING
    assert "cannot start from the measured state" in rig.loop.status().reasons[0]
    rig.q = HOME.copy()
    assert rig.step(1)[0] is not None and rig.loop.state == HOLDING


def test_start_waits_for_a_fresh_joint_state(robot) -> None:
    rig = Rig(robot, joint_state_timeout=0.05)
    rig.feed = False
    rig.loop.update_joint_state(rig.q, rig.v, rig.clock.t - 10.0)  # a 10 s old state
    rig.loop.set_enabled(True)
    for _ in range(5):
        rig.clock.t += DT
        assert rig.loop.tick() is None
    assert "fresh joint state" in rig.loop.status().reasons[0]
    moved = rig.q + 0.3
    rig.q = moved
    rig.feed = True
    cmd = rig.step(1)[0]
    # the first command lies within one tick's motion of the measurement
    assert np.max(np.abs(cmd.positions - moved)) <= rig.filter.limits.velocity.max() * DT + 1e-9


def test_after_a_tracking_fault_the_loop_restarts_from_the_measurement(robot) -> None:
    """A measurement far from the command is never commanded by itself (it may be a sensor
    glitch): the loop holds and says why; an operator's e-stop reset re-seeds from it. Motion
    resuming after a fault starts from the measurement too."""
    rig = Rig(robot, tracking_error_limit=0.1)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    rig.step(20)
    assert rig.loop.state == RUNNING
    held_q = rig.q.copy()
    pushed = rig.q + 0.3  # the arm is pushed away by hand and stays there
    rig.feed = False

    def run(q_meas: np.ndarray, n: int) -> list:
        out = []
        for _ in range(n):
            rig.clock.t += DT
            rig.loop.update_joint_state(q_meas, np.zeros(J), rig.clock.t)
            out.append(rig.loop.tick())
        return out

    cmds = run(pushed, 80)
    assert rig.loop.state == HOLDING
    assert any("tracking error" in r for r in rig.loop.status().reasons)
    assert np.max(np.abs(cmds[-1].positions - held_q)) < 0.1  # holds, never jumps to it
    rig.loop.estop()
    run(pushed, 5)
    assert rig.loop.reset()[0]
    hold = run(pushed, 3)[-1]
    np.testing.assert_allclose(hold.positions, pushed, atol=1e-9)  # re-seeded, at rest
    assert np.all(hold.velocities == 0.0)
def test_commands_carry_the_filters_certified_continuation(robot) -> None:
    rig = Rig(robot)
    rig.loop.plan_steps = 10  # 100 ms at 100 Hz, as the streamed trajectory needs
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.3))
    cmds = [c for c in rig.step(30) if c is not None]
    lim = rig.filter.limits
    moving = [c for c in cmds if np.abs(c.velocities).max() > 1e-3]
    assert moving, "the chunk moves the arm"
    for c in moving:
        assert c.plan is not None and c.plan.shape[0] >= 10 and c.plan.shape[1:] == (3, J)
        assert not c.plan[-1, 1].any()  # the plan ends at rest
        q = np.vstack([c.positions, c.plan[:, 0]])
        v = np.vstack([c.velocities, c.plan[:, 1]])
        # a stop: every joint's speed falls monotonically, inside every limit, continuous
        assert np.all(np.diff(np.abs(v), axis=0) <= 1e-12)
        assert np.all(q >= lim.lower - 1e-9) and np.all(q <= lim.upper + 1e-9)
        assert np.all(np.abs(c.plan[:, 2]) <= lim.acceleration + 1e-9)
        np.testing.assert_allclose(np.diff(q, axis=0), 0.5 * (v[1:] + v[:-1]) * DT, atol=1e-12)


def _fault_then_hold(rig: Rig) -> np.ndarray:
    """Run a chunk, stop the joint states until the stale-input watchdog brakes the loop to a
    hold, and return the held command's positions."""
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2))
    rig.step(20)
    assert rig.loop.state == RUNNING
    rig.feed = False
    cmds = [c for c in rig.step(80) if c is not None]
    assert rig.loop.state == HOLDING
    return cmds[-1].positions.copy()


def test_motion_resumes_after_a_fault_by_a_glide_to_the_settled_measurement(robot) -> None:
    """The arm's controller still holds the last command after a watchdog fault, so re-seeding
    the command from a measurement 4 cm-ish away by a step would be a discontinuity (a Franka
    aborts on it): the commanded state glides there within the limits, at rest, then moves."""
    rig = Rig(robot, joint_state_timeout=0.05, tracking_error_limit=0.1)
    held = _fault_then_hold(rig)
    pushed = held + np.array([0.0, 0.0, 0.0, 0.06, 0.0, -0.04, 0.0])  # moved while unmeasured
    meas, out, reasons, started = pushed, [], set(), None
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2, latency=0.0))
    for _ in range(150):
        rig.clock.t += DT
        rig.loop.update_joint_state(meas, np.zeros(J), rig.clock.t)
        cmd = rig.loop.tick()
        reasons.update(rig.loop.status().reasons)
        if cmd is not None:
            if rig.loop.state == RUNNING and started is None:
                started = out[-1]  # the last command before motion: where the glide ended
            out.append(cmd)
            if rig.loop.state != HOLDING:
                meas = cmd.positions.copy()  # the arm follows the command once it moves
        if rig.loop.state == RUNNING and out and np.abs(out[-1].velocities).max() > 1e-3:
            break
    assert rig.loop.state == RUNNING
    assert any(r.startswith("resync: moving to the measured state") for r in reasons)
    q = np.array([c.positions for c in out])
    lim = rig.filter.limits
    assert np.all(np.abs(np.diff(q, axis=0)) <= lim.velocity * DT + 1e-9)  # never a step
    assert within_limits(out, lim)
    # re-seeded there, at rest (within the filter's tracking of the glide), before any motion
    assert np.abs(started.positions - pushed).max() <= 2e-4
    assert np.abs(started.velocities).max() <= 1e-3


def test_resync_never_commands_a_measurement_that_does_not_settle(robot) -> None:
    """A glitching sensor (every other state 5 cm off on one joint, each fresh and within the
    tracking limit) never becomes the commanded state: the loop holds and says why."""
    rig = Rig(robot, joint_state_timeout=0.05, tracking_error_limit=0.1)
    held = _fault_then_hold(rig)
    glitch = held + np.array([0.0, 0.0, 0.0, 0.05, 0.0, 0.0, 0.0])
    rig.loop.submit_chunk(rig.chunk(amplitude=0.2, latency=0.0))
    out, reasons = [], set()
    for k in range(40):  # within the chunk's 0.5 s timeout
        rig.clock.t += DT
        rig.loop.update_joint_state(glitch if k % 2 else held, np.zeros(J), rig.clock.t)
        out.append(rig.loop.tick())
        reasons.update(rig.loop.status().reasons)
    assert all(c is not None and np.abs(c.positions - held).max() <= 1e-9 for c in out)
    assert "resync: waiting for the arm to settle" in reasons
    assert rig.loop.state == HOLDING


def test_missed_slots_follow_the_continuation_on_a_streamed_output(robot) -> None:
    """follow_on_miss (the trajectory interface): each slot the ticker skipped becomes the
    filter's certified continuation state, handed to the output, one period apart."""
    rig = Rig(robot)
    rig.loop.follow_on_miss = True
    rig.loop.plan_steps = 5
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.3))
    rig.step(30)
    last = rig.commands[-1]
    plan = rig.filter.continuation(2)[:2]
    n = len(rig.commands)
    rig.loop._note_missed(2)  # what the ticker reports after an overrun
    rig.clock.t += 2 * DT
    rig.step(1)
    followed = rig.commands[n:n + 2]
    assert len(rig.commands) == n + 3
    assert [c.plan is None for c in followed] == [True, True]
    for k, (c, row) in enumerate(zip(followed, plan, strict=True), start=1):
        np.testing.assert_array_equal(c.positions, row[0])
        assert c.stamp == pytest.approx(last.stamp + k * DT)
    nxt = rig.commands[-1]
    step = nxt.positions - followed[-1].positions
    np.testing.assert_allclose(step, 0.5 * (followed[-1].velocities + nxt.velocities) * DT,
                               atol=1e-12)


def test_reset_is_not_refused_by_a_stale_moving_command_while_inactive(robot) -> None:
    """Disabled (publishing nothing) with an e-stop latched and a last command that was still
    moving (cut short): the reset clears it; ~/enable is refused while latched, so refusing the
    reset here would leave the operator no way back."""
    rig = Rig(robot)
    rig.loop.set_enabled(True)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(amplitude=0.3))
    moving = [c for c in rig.step(30) if c is not None][-1]
    assert np.abs(moving.velocities).max() > 1e-3
    rig.loop.estop()
    assert not rig.loop.reset()[0]  # publishing and still moving: refused
    rig.loop.set_enabled(False)
    for _ in range(200):
        rig.step(1)
        if rig.loop.state == INACTIVE:
            break
    assert rig.loop.state == INACTIVE
    rig.loop._last_command = moving  # as if the stop had been cut short by a deactivation
    ok, why = rig.loop.reset()
    assert ok, why
