"""Diagnostics entries from the core's snapshots, and their DiagnosticArray form."""

from __future__ import annotations

import math

import pytest

from diffusion_controller.control.loop import LoopStatus
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.runtime.worker import WorkerStats


def _loop(state: str = "running", reasons: tuple[str, ...] = (), **kw) -> LoopStatus:
    base = dict(
        state=state, reasons=reasons, ticks=1000, published=990, missed_ticks=2,
        interventions=5, brake_ticks=10, filter_fallbacks=0, exceptions=0, output_errors=0,
        chunks_accepted=9, chunks_rejected=1, chunks_superseded=0, joint_states_rejected=0,
        last_command=None, last_submit=None, last_error="", rate_hz=100.0, window=2048,
        tick_error_ms={"p50": 0.12, "p99": 1.5, "max": 3.0, "n": 1000},
        compute_ms={"p50": 0.3, "p99": 0.9, "max": 2.0, "n": 1000},
        qp_iterations={"p50": 12.0, "max": 40.0}, qp_status={"ok": 980, "braking": 10},
    )
    base.update(kw)
    return LoopStatus(**base)


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


def test_loop_entry_levels_and_values() -> None:
    e = diag.loop_entry("dc", _loop(), 99.5, True, False)
    assert e.level == diag.OK and e.message == "running"
    assert e.value("command_rate_hz") == "99.5"
    assert e.value("tick_error_p99_ms") == "1.5"
    assert e.value("qp_status") == "ok=980, braking=10"
    e = diag.loop_entry("dc", _loop("holding", ("stale joint_states (0.21 s old)",)), 100.0,
                        True, False)
    assert e.level == diag.WARN and "stale joint_states" in e.message
    e = diag.loop_entry("dc", _loop("estopped", ("e-stop latched",)), 100.0, True, True)
    assert e.level == diag.ERROR and "e-stop" in e.message
    e = diag.loop_entry("dc", _loop(exceptions=1), 100.0, True, False)
    assert e.level == diag.WARN


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


def test_to_msg() -> None:
    pytest.importorskip("diagnostic_msgs", reason="ROS message packages are not installed")
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    entries = [diag.loop_entry("dc", _loop("braking", ("e-stop",)), 100.0, True, False)]
    msg = diag.to_msg(entries, Time(sec=3), "/dc")
    assert len(msg.status) == 1
    st = msg.status[0]
    assert st.level == DiagnosticStatus.WARN
    assert st.hardware_id == "/dc" and st.name == "dc: control loop"
    assert any(kv.key == "reasons" and kv.value == "e-stop" for kv in st.values)
