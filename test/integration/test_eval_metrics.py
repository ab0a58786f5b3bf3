"""Evaluation metrics, failure labels and the independent command check, on synthetic traces
built from real task geometry, the real diagnostics format and the real Panda model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_controller.control.loop import LoopStatus
from diffusion_controller.control.panda import panda_urdf_path
from diffusion_controller.control.types import Sphere
from diffusion_controller.eval.metrics import (
    DiagSample,
    EpisodeTrace,
    diag_sample,
    episode_result,
    failure_label,
    inference_samples,
    jerk_stats,
    path_length,
    stop_kind,
)
from diffusion_controller.eval.safety_check import CommandChecker
from diffusion_controller.eval.summary import group_summary, summarise, table_rows
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.sim.task import sample_task

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
SEED = 10003


@pytest.fixture(scope="module")
def spec():
    return sample_task(SEED)


def _reports(spec, tool_path, **final) -> list[dict]:
    out = []
    for k, tool in enumerate(tool_path):
        out.append(
            {
                "episode": 4,
                "seed": spec.seed,
                "sim_time": 0.04 * k,
                "tool": [float(x) for x in tool],
                "collision_events": 0,
                "collided": False,
                "success": False,
                "timed_out": False,
                "done": False,
                "side": "none",
                "min_clearance_episode": 0.05,
                "frames_dropped": 0,
            }
        )
    out[-1].update(final)
    return out


def _diags(t0: float, states: list[tuple[str, str]], **counters) -> list[DiagSample]:
    return [
        DiagSample(t=t0 + 0.2 * (k + 1), state=s, reasons=r, tick_error_p99_ms=1.0 + k, **counters)
        for k, (s, r) in enumerate(states)
    ]


def _trace(spec, tool_path, states, **final) -> EpisodeTrace:
    tr = EpisodeTrace(policy="diffusion", perturbation="none", seed=spec.seed, spec=spec)
    tr.t_enable = 100.0
    tr.reports = _reports(spec, tool_path, **final)
    tr.diags = _diags(100.0, states)
    return tr


def _line(a: np.ndarray, b: np.ndarray, n: int = 40) -> np.ndarray:
    return a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)


RUN = [("running", "")] * 10


def test_success_is_labelled_none_with_the_simulators_side(spec) -> None:
    above = spec.target + np.array([0.0, 0.0, 0.04])
    tr = _trace(spec, _line(spec.start_tool, above), RUN, success=True, done=True, side="left")
    r = episode_result(tr)
    assert r.success and r.failure == "none" and r.side == "left" and not r.timed_out
    assert r.path_length_m == pytest.approx(np.linalg.norm(above - spec.start_tool), rel=1e-9)
    assert r.min_target_distance_m == pytest.approx(0.04, abs=1e-9)
    assert r.running_fraction == 1.0 and r.tick_error_p99_ms == pytest.approx(10.0)


def test_collision_is_control_unless_timing_stops_dominate(spec) -> None:
    path = _line(spec.start_tool, np.array([spec.obstacle.x, spec.obstacle.y, 0.1]))
    r = episode_result(_trace(spec, path, RUN, collided=True, collision_events=1, done=True))
    assert r.failure == "control" and r.collisions == 1 and not r.timed_out
    late = [("running", "")] * 6 + [("holding", "stale image (0.61 s old, limit 0.5 s)")] * 4
    r = episode_result(_trace(spec, path, late, collided=True, collision_events=2, done=True))
    assert r.failure == "timing" and r.timing_stop_fraction == pytest.approx(0.4)


def test_safety_stop_timing_and_never_ran(spec) -> None:
    path = _line(spec.start_tool, spec.start_tool + np.array([0.1, 0.1, 0.0]))
    held = [*RUN[:8], ("holding", "tracking error 0.412 rad on panda_joint2 (limit 0.3 rad)")]
    r = episode_result(_trace(spec, path, held, timed_out=True, done=True))
    assert r.failure == "safety_stop" and r.last_state == "holding"
    estop = RUN[:5] + [("estopped", "e-stop latched")] * 5
    assert episode_result(_trace(spec, path, estop, timed_out=True)).failure == "safety_stop"
    starved = RUN[:5] + [("holding", "no fresh chunk for 1.20 s (deadline 1 s)")] * 5
    assert episode_result(_trace(spec, path, starved, timed_out=True)).failure == "timing"
    never = [("holding", "waiting for a fresh chunk")] * 10
    r = episode_result(_trace(spec, path, never, timed_out=True))
    assert r.failure == "timing" and r.running_fraction == 0.0


def test_near_target_is_control_elsewhere_perception_still_timeout(spec) -> None:
    near = spec.target + np.array([0.06, 0.0, 0.1])  # 6 cm off, 10 cm up: inside twice the zone
    r = episode_result(_trace(spec, _line(spec.start_tool, near), RUN, timed_out=True))
    assert r.failure == "control" and r.timed_out
    away = spec.start_tool + np.array([-0.05, 0.2, 0.1])
    r = episode_result(_trace(spec, _line(spec.start_tool, away), RUN, timed_out=True))
    assert r.failure == "perception"
    jitter = spec.start_tool + np.array([[0.01, 0, 0], [-0.01, 0, 0]] * 20)  # long, goes nowhere
    r = episode_result(_trace(spec, jitter, RUN, timed_out=True))
    assert r.path_length_m > 0.5 and r.failure == "timeout"


def test_failure_rule_order() -> None:
    base = dict(
        success=False,
        collided=False,
        never_ran=False,
        timing_fraction=0.0,
        safety_fraction=0.0,
        ended_in_safety_stop=False,
        near_target=False,
        moved=False,
    )
    assert failure_label(**{**base, "success": True, "collided": True}) == "none"
    assert failure_label(**{**base, "collided": True, "ended_in_safety_stop": True}) == "control"
    assert failure_label(**{**base, "ended_in_safety_stop": True, "never_ran": True}) == (
        "safety_stop"
    )
    assert failure_label(**{**base, "timing_fraction": 0.25, "near_target": True}) == "timing"
    assert failure_label(**{**base, "near_target": True, "moved": True}) == "control"
    assert failure_label(**{**base, "moved": True}) == "perception"
    assert failure_label(**base) == "timeout"


def test_counters_are_deltas_and_latencies_are_distinct_inferences(spec) -> None:
    tr = _trace(spec, _line(spec.start_tool, spec.start_tool + 0.01), RUN, timed_out=True)
    tr.diag_before = DiagSample(
        t=99.0,
        interventions=100,
        brake_ticks=7,
        missed_ticks=3,
        inferences=50,
        last_latency_ms=30.0,
    )
    tr.diags = [
        DiagSample(t=100.2, state="running", inferences=50, last_latency_ms=30.0),  # not new
        DiagSample(t=100.4, state="running", inferences=52, last_latency_ms=41.0),
        DiagSample(t=100.6, state="running", inferences=52, last_latency_ms=41.0),  # repeat
        DiagSample(t=100.8, state="running", inferences=54, last_latency_ms=45.0),
    ]
    tr.diag_after = DiagSample(
        t=101.0,
        state="inactive",
        reasons="disabled",
        interventions=130,
        brake_ticks=9,
        missed_ticks=3,
        inferences=55,
        last_latency_ms=47.0,
    )
    r = episode_result(tr)
    assert (r.interventions, r.brake_ticks, r.missed_ticks) == (30, 2, 0)
    assert r.latencies_ms == [41.0, 45.0] and r.inference_p50_ms == pytest.approx(43.0)
    assert inference_samples(tr.diags, None) == [30.0, 41.0, 45.0]


def test_jerk_of_a_cubic_and_path_length() -> None:
    dt = 0.01
    t = np.arange(50) * dt
    commands = [np.full(7, 2.0 * s**3) for s in t]  # d3q/dt3 = 12 on every joint
    rms, peak = jerk_stats(commands, dt)
    assert rms == pytest.approx(12.0, rel=1e-6) and peak == pytest.approx(12.0, rel=1e-6)
    assert math.isnan(jerk_stats(commands[:3], dt)[0])
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    assert path_length(square) == pytest.approx(3.0) and path_length(square[:1]) == 0.0


def test_diag_sample_reads_the_nodes_own_format() -> None:
    status = LoopStatus(
        state="holding",
        reasons=("stale image (0.70 s old, limit 0.5 s)",),
        ticks=900,
        published=880,
        missed_ticks=4,
        interventions=321,
        brake_ticks=55,
        filter_fallbacks=2,
        exceptions=0,
        output_errors=0,
        chunks_accepted=80,
        chunks_rejected=1,
        chunks_superseded=0,
        joint_states_rejected=0,
        last_command=None,
        last_submit=None,
        last_error="",
        rate_hz=100.0,
        window=2048,
        tick_error_ms={"p50": 0.21, "p99": 3.456, "max": 9.0, "n": 900},
        compute_ms={"p50": 0.5, "p99": 1.5, "max": 2.0, "n": 900},
        qp_iterations={"p50": 25.0, "max": 50.0},
        qp_status={"ok": 800},
        since_last_tick_s=0.0,
    )
    loop = diag.loop_entry("diffusion_controller", status, 99.5, True, False)
    inference = diag.StatusEntry(
        "diffusion_controller: inference",
        diag.OK,
        "ok",
        diag.kv([("inferences", 77), ("last_latency_ms", 31.25), ("latency_p50_ms", 30.5)]),
    )
    statuses = {e.name: dict(e.values) for e in (loop, inference)}
    d = diag_sample(5.0, statuses)
    assert d is not None and d.state == "holding" and "stale image" in d.reasons
    assert (d.interventions, d.brake_ticks, d.missed_ticks, d.inferences) == (321, 55, 4, 77)
    assert d.tick_error_p99_ms == pytest.approx(3.456) and d.last_latency_ms == 31.25
    assert stop_kind(d) == "timing"
    assert diag_sample(5.0, {"diffusion_controller: node": {"lifecycle": "unconfigured"}}) is None
    assert stop_kind(DiagSample(t=0, state="running")) == "running"
    assert stop_kind(DiagSample(t=0, state="inactive", reasons="disabled")) == "other"


def test_summary_fields_and_table(spec) -> None:
    results = []
    for policy, side, ok in (
        ("diffusion", "left", True),
        ("diffusion", "right", True),
        ("diffusion", "none", False),
        ("regression", "left", False),
    ):
        final = {"success": ok, "done": True, "side": side, "timed_out": not ok}
        tr = _trace(
            spec, _line(spec.start_tool, spec.target + np.array([0.0, 0.0, 0.04])), RUN, **final
        )
        tr.policy = policy
        tr.diags[3] = DiagSample(
            t=tr.diags[3].t, state="running", inferences=3, last_latency_ms=20.0 + len(results)
        )
        tr.check = {"commands": 10, "position": 0, "keepout": 1 if policy == "regression" else 0}
        results.append(episode_result(tr))
    s = summarise(results, "diffusion", "regression")
    assert s["episodes"] == 3 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["mode_fractions"]["left"] == pytest.approx(1 / 3)
    assert s["mode_fractions"]["right"] == pytest.approx(1 / 3)
    assert s["safety_violations"] == 0 and s["collisions"] == 0
    assert s["p50_inference_ms"] == pytest.approx(21.0) and s["p99_tick_error_ms"] == 10.0
    assert s["by_perturbation"]["none"]["episodes"] == 3
    b = s["baseline"]
    assert b["policy"] == "regression" and b["episodes"] == 1 and b["success_rate"] == 0.0
    assert b["safety_violations"] == 1 and b["violations_by_kind"]["keepout"] == 1
    assert summarise(results, "diffusion", None)["baseline"] is None
    rows = table_rows(results)
    assert [(r["policy"], r["success"]) for r in rows] == [
        ("diffusion", "2/3"),
        ("regression", "0/1"),
    ]
    assert math.isnan(group_summary([])["success_rate"])


# --- the independent command check, on the real Panda model --------------------------------------
@pytest.fixture(scope="module")
def checker() -> CommandChecker:
    with open(panda_urdf_path(), encoding="utf-8") as fh:
        urdf = fh.read()
    return CommandChecker.from_params(
        urdf,
        JOINTS,
        position_margin=0.05,
        velocity_scale=0.5,
        acceleration_scale=0.5,
        jerk_scale=0.5,
        control_rate_hz=100.0,
    )


def test_checker_counts_positions_malformed_and_velocity(checker: CommandChecker, spec) -> None:
    checker.new_episode()
    checker.set_keepout([])
    q = spec.start_q.copy()
    assert checker.check(q) == []
    step = q.copy()
    step[0] += 0.9 * checker.limits.velocity[0] * checker.dt  # just inside the velocity limit
    assert checker.check(step) == []
    jump = step.copy()
    jump[0] += 1.5 * checker.limits.velocity[0] * checker.dt
    assert checker.check(jump) == ["velocity"]
    out = jump.copy()
    out[3] = checker.limits.upper[3] + 0.01  # inside the URDF range, outside the tightened one
    assert "position" in checker.check(out)
    assert checker.check([np.nan] * 7) == ["malformed"]
    assert checker.check(q[:6]) == ["malformed"]
    assert checker.check(q) == []  # no velocity judged across a malformed command
    c = checker.counts
    assert (c.commands, c.position, c.malformed, c.velocity) == (7, 1, 2, 2)  # `out` jumped too
    assert c.violations == 3 and "position" in c.worst


def test_checker_keepout_and_inherited_overlap(checker: CommandChecker, spec) -> None:
    checker.new_episode()
    hand = checker.robot.sphere_positions(spec.start_q)[
        checker.robot.sphere_groups.index("panda_hand")
    ]
    far = Sphere(center=np.array([0.6, -0.5, 0.1]), radius=0.05, name="far")
    checker.set_keepout([far])
    assert checker.check(spec.start_q) == []
    assert 0.0 < checker.counts.min_keepout_margin < 1.0
    on_hand = Sphere(center=hand, radius=0.02, name="on_hand")
    checker.set_keepout([on_hand])  # the obstacle jumps onto the arm: not the controller's doing
    assert checker.check(spec.start_q) == ["keepout_inherited"]
    assert checker.check(spec.start_q) == ["keepout_inherited"]
    turned = spec.start_q.copy()
    turned[0] += 1.0  # the base joint swings the hand about 30 cm sideways
    hand_then = checker.robot.sphere_positions(turned)[
        checker.robot.sphere_groups.index("panda_hand")
    ]
    checker.set_keepout([Sphere(center=hand_then, radius=0.02, name="ahead")])
    assert checker.check(spec.start_q) == []  # clear of it at the start ...
    assert "keepout" in checker.check(turned)  # ... then commanded into it: a violation
    c = checker.counts
    assert (c.keepout, c.keepout_inherited, c.violations) == (1, 2, 1)
    assert c.min_keepout_margin < 0 and "into" in c.worst["keepout"]


def test_checker_refuses_mismatched_inputs(checker: CommandChecker) -> None:
    with pytest.raises(ValueError, match="differ"):
        CommandChecker(
            checker.robot,
            checker.limits.__class__(
                list(reversed(JOINTS)),
                checker.limits.lower,
                checker.limits.upper,
                checker.limits.velocity,
                checker.limits.acceleration,
                checker.limits.jerk,
            ),
            0.01,
        )
    with pytest.raises(ValueError, match="control_dt"):
        CommandChecker(checker.robot, checker.limits, 0.0)


def test_episode_time_and_path_start_at_the_enable(spec) -> None:
    """Reports from the settling time before the enable are cut off, but for the last one."""
    still = [spec.start_tool] * 10
    moving = _line(spec.start_tool, spec.start_tool + np.array([0.0, 0.2, 0.0]), 11)[1:]
    tr = _trace(spec, np.vstack([still, moving]), RUN, timed_out=True, done=True)
    for k, r in enumerate(tr.reports):
        r["received"] = 99.05 + 0.1 * k  # the enable (t = 100) falls between reports 9 and 10
        r["sim_time"] = 0.1 * k
    r = episode_result(tr)
    assert r.time_s == pytest.approx(1.9 - 0.9)
    assert len(r.path) == 11 and r.path_length_m == pytest.approx(0.2)
