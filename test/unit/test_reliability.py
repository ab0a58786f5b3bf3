"""The reliability pieces on their own: whole-run histograms, the loop's clock-jump handling (real
safety filter and Panda model, ticked by hand), command-stream checks, the fault-file test hook,
the GC guard and the real-time helpers."""

from __future__ import annotations

import gc
import json
import os
import threading

import numpy as np
import pytest
from core_settings import UNIT_DEADLINES, UNIT_HANDOVER, UNIT_LIMITS, safety, scheduler, watchdogs

from diffusion_controller.control.chunk_scheduler import ChunkScheduler
from diffusion_controller.control.loop import HOLDING, RUNNING, ControlLoop, Histogram
from diffusion_controller.control.types import Chunk, JointLimits
from diffusion_controller.control.watchdogs import Watchdogs
from diffusion_controller.reliability import checks, rt
from diffusion_controller.reliability.gc_guard import GcMonitor, freeze_heap
from diffusion_controller.runtime import fault_hooks

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def test_histogram_percentiles_and_max() -> None:
    h = Histogram(1e-5, 0.2)
    values = np.linspace(0.0, 0.01, 1001)  # 0 .. 10 ms
    for v in values:
        h.add(float(v))
    h.add(float("nan"))  # ignored
    h.add(5.0)  # beyond the range: last bin, exact max kept
    s = h.summary(1e3)
    assert s["n"] == 1002
    assert s["p50"] == pytest.approx(5.0, abs=0.02)
    assert s["p99"] == pytest.approx(9.9, abs=0.03)
    assert s["max"] == pytest.approx(5000.0)
    assert Histogram(1e-5, 0.2).summary()["n"] == 0


@pytest.fixture(scope="module")
def robot():
    pytest.importorskip("pybullet_data", reason="pybullet_data has the URDF")
    from diffusion_controller.control.panda import panda_urdf_path
    from diffusion_controller.control.robot_model import RobotModel

    return RobotModel.from_urdf(panda_urdf_path())


class Rig:
    """A loop on a hand-driven stamp clock; the arm reports back the last command."""

    def __init__(self, robot) -> None:
        from diffusion_controller.control.safety_filter import SafetyFilter

        self.t = 1000.0
        self.jumps: list[float] = []
        self.commands = []
        self.loop = ControlLoop(
            SafetyFilter(robot, safety(**UNIT_LIMITS, control_rate_hz=100.0)),
            ChunkScheduler(7, scheduler(**UNIT_HANDOVER)),
            Watchdogs(watchdogs(**{**UNIT_DEADLINES, "image_timeout": None})),
            self.commands.append, rate_hz=100.0, clock=lambda: self.t,
            on_clock_jump=self.jumps.append)
        self.loop.set_enabled(True)
        self.q, self.v = HOME.copy(), np.zeros(7)
        self.mono = 0.0

    def step(self, n: int = 1, feed: bool = True) -> None:
        for _ in range(n):
            self.t += 0.01
            self.mono += 0.01
            if feed:
                self.loop.update_joint_state(self.q, self.v, self.t)
            cmd = self.loop.tick(self.mono)
            if cmd is not None:
                self.q, self.v = cmd.positions.copy(), cmd.velocities.copy()

    def chunk(self, seq: int) -> Chunk:
        times = np.arange(16) * 0.1
        wave = 0.2 * np.sin(2 * np.pi * 0.5 * times)[:, None] * np.ones(7)
        return Chunk(t0=self.t - 0.02, dt=0.1, positions=HOME + wave, seq=seq)


@pytest.mark.parametrize("jump", [-30.0, 5.0])
def test_clock_jump_brakes_to_rest_then_resumes_on_the_new_timeline(robot, jump: float) -> None:
    rig = Rig(robot)
    rig.step(2)
    rig.loop.submit_chunk(rig.chunk(1))
    rig.step(40)
    assert rig.loop.state == RUNNING and np.max(np.abs(rig.v)) > 1e-3
    rig.t += jump
    rig.step(1)
    assert rig.jumps and rig.jumps[0] == pytest.approx(jump, abs=0.02)
    assert rig.loop.status().clock_jumps == 1
    assert "jumped" in rig.loop.status().last_error
    # A chunk arriving at once does not cut the stop short: the arm comes to rest first.
    rig.loop.submit_chunk(rig.chunk(2))
    for _ in range(60):
        rig.step(1)
        if rig.loop.state == HOLDING:
            break
    assert rig.loop.state == HOLDING and np.max(np.abs(rig.v)) == 0.0
    # Inputs on the new timeline are accepted and a fresh chunk resumes motion.
    for k in range(3, 30):
        rig.loop.submit_chunk(rig.chunk(k))
        rig.step(3)
        if rig.loop.state == RUNNING:
            break
    assert rig.loop.state == RUNNING, rig.loop.status().reasons


def test_loop_restart_is_not_a_clock_jump(robot) -> None:
    rig = Rig(robot)
    rig.step(5)
    rig.t += 20.0  # stamp clock and monotonic time both move on (e.g. deactivated for 20 s)
    rig.mono += 20.0
    rig.step(2)
    assert rig.loop.status().clock_jumps == 0 and not rig.jumps


def _limits() -> JointLimits:
    return JointLimits(["a", "b"], np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                       np.array([1.0, 1.0]), np.array([10.0, 10.0]), np.array([100.0, 100.0]))


def test_brake_run_finds_the_stop_by_command_count() -> None:
    """A cruise, a brake at 10 rad/s^2 (0.1 rad/s per tick) from 0.5 rad/s, then a hold: the run
    starts at the last cruise step and is 5 commands long, whatever the receive times were."""
    dt, n = 0.01, 40
    v = np.concatenate([np.full(10, 0.5), np.maximum(0.5 - 0.1 * np.arange(1, 7), 0.0),
                        np.zeros(n - 16)])
    q = np.zeros((n, 2))
    q[1:, 0] = np.cumsum(v[:-1] * dt)
    q[1:, 1] = -0.5 * q[1:, 0]  # a second joint braking in the other direction
    run = checks.brake_run(q, 0)
    assert run is not None and (run.onset, run.rest) == (9, 14) and run.commands == 5
    assert checks.rest_index(q, 0) == 14
    assert checks.brake_run(q, 12) == checks.BrakeRun(onset=12, rest=14)  # clipped at i_from
    slow = q.copy()  # a speed-up inside the brake: the run starts after it
    slow[13:, 0] += 0.002
    assert checks.brake_run(slow, 0).onset == 12
    # at the deceleration limit (10 and 5 rad/s^2: the second joint moves at half the speed)
    full = checks.brake_run(q, 0, deceleration=np.array([10.0, 5.0]), dt=dt)
    assert full.full_rate_onset == 9 and full.gentle == 0
    # at half the limit: the same fall, but only the landing is at the limit's rate
    half = checks.brake_run(q, 0, deceleration=np.array([20.0, 10.0]), dt=dt)
    assert half.onset == 9 and half.full_rate_onset == 12 and half.gentle == 3
    moving = np.cumsum(np.full((n, 2), 0.001), axis=0)
    assert checks.brake_run(moving, 0) is None and checks.rest_index(moving, 0) is None


def test_describe_violations_shows_a_lost_command_as_a_whole_multiple() -> None:
    dt = 0.01
    q = np.zeros((20, 2))
    q[:, 0] = 0.008 * np.arange(20)  # 0.8 rad/s of 1.0
    lost = np.delete(q, [10, 11], axis=0)  # two commands lost: one step of 3 x 0.8 rad/s
    text = checks.describe_violations(lost, _limits(), dt, times=np.arange(18) * dt)
    assert text.startswith("1 velocity steps over the limit")
    assert "step 9 -> 10: 2.40 x limit on ['a']" in text and "[ 3. nan]" in text
    assert checks.describe_violations(q, _limits(), dt) == "0 velocity steps over the limit"


def test_limit_violations_and_rest_index() -> None:
    dt = 0.01
    q = np.zeros((40, 2))
    q[:20, 0] = 0.0005 * np.arange(20)  # 0.05 rad/s: fine
    q[20:, 0] = q[19, 0]
    ok = checks.limit_violations(q, _limits(), dt)
    assert ok.total == 0 and ok.commands == 40
    assert checks.rest_index(q, 5) == 19
    assert checks.rest_index(q, 30) == 30  # already at rest
    bad = q.copy()
    bad[5, 1] = 1.5  # outside the range, and too fast into and out of it
    bad[6, 0] = np.nan
    v = checks.limit_violations(bad, _limits(), dt)
    assert v.position == 1 and v.nonfinite == 1 and v.velocity >= 1 and v.acceleration >= 1
    assert "outside" in str(v)


def test_fault_hook_reads_the_file_only_when_set(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(fault_hooks.ENV, raising=False)
    assert fault_hooks.current() is fault_hooks.NONE
    path = tmp_path / "f.json"
    monkeypatch.setenv(fault_hooks.ENV, str(path))
    assert fault_hooks.current() is fault_hooks.NONE  # no file yet
    path.write_text(json.dumps({"raise": "x", "nan": True}))
    with pytest.raises(RuntimeError, match="injected fault: x"):
        fault_hooks.before_inference()
    os.utime(path, ns=(1, 1))
    path.write_text("{not json")
    os.utime(path, ns=(2, 2))
    assert fault_hooks.current() is fault_hooks.NONE  # unreadable: no fault
    path.write_text(json.dumps({"delay_s": 0.01}))
    os.utime(path, ns=(3, 3))
    assert fault_hooks.before_inference().delay_s == pytest.approx(0.01)


def test_gc_guard_freezes_and_times_collections() -> None:
    mon = GcMonitor()
    mon.install()
    try:
        junk = [[i] for i in range(1000)]
        for item in junk:
            item.append(item)  # cycles
        del junk
        info = freeze_heap()
        assert info["frozen"] > 0 and info["collect_ms"] >= 0.0
        gc.collect(0)
        s = mon.summary()
        assert sum(s["collections"]) >= 2 and max(s["max_pause_ms"]) > 0.0
        mon.reset()
        assert mon.summary()["collections"] == [0, 0, 0]
    finally:
        mon.uninstall()
        gc.unfreeze()


def test_rt_helpers_report_what_was_granted() -> None:
    result: dict[str, object] = {}

    def worker() -> None:
        err = rt.set_fifo(0, 10)
        result["err"] = err
        result["policy"] = rt.policy_of(threading.get_native_id())
        rt.set_other(0)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    if result["err"] is None:
        assert result["policy"] == "fifo:10"
    else:  # not permitted here: the reason says so, nothing else changed
        assert "SCHED_FIFO" in str(result["err"])
    floor = rt.wakeup_jitter(0.2, 100.0, priority=None)
    assert floor["n"] == 20 and 0.0 <= floor["p50_ms"] <= floor["max_ms"]
