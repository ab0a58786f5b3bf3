"""Diagnostics entries from the core's snapshots, and their DiagnosticArray form."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from core_settings import UNIT_DEADLINES, UNIT_HANDOVER, UNIT_LIMITS, safety, scheduler, watchdogs

from diffusion_controller.control.loop import LoopStatus
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.runtime.worker import WorkerStats


@pytest.fixture(scope="module")
def loop_status() -> LoopStatus:
    """A real status snapshot: the loop on the Panda with the real safety filter, a few ticks."""
    pytest.importorskip("pybullet_data", reason="the Panda URDF comes with it")
    from diffusion_controller.control.chunk_scheduler import ChunkScheduler
    from diffusion_controller.control.loop import ControlLoop
    from diffusion_controller.control.panda import panda_urdf_path
    from diffusion_controller.control.robot_model import RobotModel
    from diffusion_controller.control.safety_filter import SafetyFilter
    from diffusion_controller.control.watchdogs import Watchdogs

    robot = RobotModel.from_urdf(panda_urdf_path(),
                                 joint_names=[f"panda_joint{i}" for i in range(1, 8)])
    clock = [10.0]
    loop = ControlLoop(SafetyFilter(robot, safety(**UNIT_LIMITS)),
                       ChunkScheduler(7, scheduler(**UNIT_HANDOVER)),
                       Watchdogs(watchdogs(**{**UNIT_DEADLINES, "image_timeout": None})),
                       lambda cmd: None,
                       clock=lambda: clock[0])
    loop.set_enabled(True)
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    for k in range(5):
        clock[0] += 0.01
        loop.update_joint_state(home, None, clock[0])
        loop.tick(100.0 + 0.01 * k)
    return loop.status()


def _loop(base: LoopStatus, state: str = "running", reasons: tuple[str, ...] = (),
          **kw) -> LoopStatus:
    if hasattr(base, "since_last_tick_s"):
        kw.setdefault("since_last_tick_s", 0.005)  # the fixture ticked on made-up times
    return dataclasses.replace(base, state=state, reasons=reasons, **kw)


def _worker(**kw) -> WorkerStats:
    base = dict(
        running=True, inferences=10, submitted=9, rejected=1, errors=0, overruns=0,
        skipped={"no new observation": 2}, latency_p50_ms=12.0, latency_p99_ms=30.0,
        last_latency_ms=11.0, obs_age_p50_ms=40.0, last_spread=None, uncertain=False,
        holding=False, last_error="", last_reject_reason="", last_outcome="submitted",
        last_timings_ms={"total": 11.0},
    )
    base.update(kw)
    return WorkerStats(**base)


def test_loop_entry_levels_and_values(loop_status: LoopStatus) -> None:
    assert loop_status.ticks == 5 and loop_status.published >= 1
    e = diag.loop_entry("dc", _loop(loop_status, tick_error_ms={"p50": 0.1, "p99": 1.5}), 99.5,
                        True, False)
    assert e.level == diag.OK and e.message == "running"
    assert e.value("command_rate_hz") == "99.5"
    assert e.value("tick_error_p99_ms") == "1.5"
    assert e.value("published") == str(loop_status.published)
    e = diag.loop_entry("dc", _loop(loop_status, qp_status={"ok": 980, "braking": 10}), 100.0,
                        True, False)
    assert e.value("qp_status") == "ok=980, braking=10"
    e = diag.loop_entry("dc", _loop(loop_status, "holding", ("stale joint_states (0.21 s old)",)),
                        100.0, True, False)
    assert e.level == diag.WARN and "stale joint_states" in e.message
    # running, but the filter holds or recovers out of a margin: WARN, naming the barrier
    why = "safety filter recovering: inside the margin of floor:panda_leftfinger (B=-0.04 m)"
    e = diag.loop_entry("dc", _loop(loop_status, "running", (why,)), 100.0, True, False)
    assert e.level == diag.WARN and "floor:panda_leftfinger" in e.message
    e = diag.loop_entry("dc", _loop(loop_status, "running", ("safety filter: infeasible",)),
                        100.0, True, False)
    assert e.level == diag.WARN and "infeasible" in e.message
    e = diag.loop_entry("dc", _loop(loop_status, "estopped", ("e-stop latched",)), 100.0, True,
                        True)
    assert e.level == diag.ERROR and "e-stop" in e.message
    e = diag.loop_entry("dc", _loop(loop_status, exceptions=1), 100.0, True, False)
    assert e.level == diag.WARN
    if hasattr(loop_status, "since_last_tick_s"):
        e = diag.loop_entry("dc", _loop(loop_status, since_last_tick_s=0.5), 100.0, True, False)
        assert e.level == diag.ERROR and "stalled" in e.message


def test_inference_entry() -> None:
    e = diag.inference_entry("dc", _worker(), "torch", 9.8, True)
    assert e.level == diag.OK
    assert e.value("latency_p50_ms") == "12" and e.value("backend") == "torch"
    e = diag.inference_entry("dc", _worker(running=False), "torch", 0.0, True)
    assert e.level == diag.ERROR
    e = diag.inference_entry("dc", _worker(errors=3, last_outcome="error", last_error="boom"),
                             "torch", 0.0, True)
    assert e.level == diag.WARN and "boom" in e.message


def test_inputs_and_uncertainty_entries() -> None:
    e = diag.inputs_entry("dc", {"joint_states": 100}, {"joint_states_nonfinite": 2},
                          "joint_states: NaN", {"joint_states": 0.01, "camera": math.inf}, 2)
    assert e.level == diag.WARN and "2 inputs rejected" in e.message
    assert e.value("age_camera_s") == "inf"
    e = diag.uncertainty_entry("dc", None, 0.2, "scale", 1, False, False)
    assert e.level == diag.OK and "off" in e.message
    e = diag.uncertainty_entry("dc", 0.5, 0.2, "hold", 4, True, True)
    assert e.level == diag.WARN and "holding" in e.message


def test_to_msg(loop_status: LoopStatus) -> None:
    pytest.importorskip("diagnostic_msgs", reason="ROS message packages are not installed")
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    entries = [diag.loop_entry("dc", _loop(loop_status, "braking", ("e-stop",)), 100.0, True,
                               False)]
    msg = diag.to_msg(entries, Time(sec=3), "/dc")
    assert len(msg.status) == 1
    st = msg.status[0]
    assert st.level == DiagnosticStatus.WARN
    assert st.hardware_id == "/dc" and st.name == "dc: control loop"
    assert any(kv.key == "reasons" and kv.value == "e-stop" for kv in st.values)
