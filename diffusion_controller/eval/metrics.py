"""Per-episode metrics, failure labels and run summaries, from what an episode recorded.

An `EpisodeTrace` holds what the evaluation saw during one episode: the simulator's reports
(/sim/contacts: tool point, contacts, the task verdict), the controller's diagnostics samples
(/diagnostics), the commands it sent, and the independent command check. `episode_result` turns a
trace into one row of numbers; eval/summary.py turns rows into the run's summary. Nothing here
needs ROS, so every rule is tested on synthetic traces.

Metrics, per episode:

- success, side, collisions: the simulator's verdict (physics contacts, the task's success rule,
  TaskSpec.side_of on the full 100 Hz tool path); time_s: sim seconds from the enable (to within
  one report period) to the verdict.
- min_clearance_m: the simulator's closest arm-obstacle distance (physics geometry).
- min_keepout_margin_m: the closest the commanded link spheres came to the keep-out spheres.
- path_length_m: length of the tool-point path as reported (25 Hz), from the enable to the verdict.
- rms_jerk / max_jerk (rad/s^3): third differences of successive commands over the control
  period, RMS over joints and time, and the largest magnitude.
- interventions, brake_ticks, filter_fallbacks, missed_ticks: increase of the controller's
  counters between the last diagnostics before the enable and the first after the verdict.
- inference_p50_ms / p99: latency of the inferences sampled by diagnostics during the episode
  (each sample is the latest inference's latency, taken when the inference count moved).
- tick_error_p99_ms: the largest p99 tick lateness the controller reported during the episode
  (its window covers the last 2048 ticks, about 20 s).
- safety_violations: commands found malformed, outside the effective joint limits, or with a
  link sphere inside a keep-out sphere by the independent check (eval/safety_check.py).

Stop-state fractions: each diagnostics sample after the controller first reached "running" is
classified by the loop's state and reasons: running; a timing stop (braking or holding because of
stale or missing joint states or images, a chunk deadline, an exhausted chunk, waiting for a
chunk); a safety stop (e-stop, tracking error, safety filter failure, non-finite values, an
uncertainty hold, an exception). The fractions are shares of those samples.

Failure labels, first rule that applies:

1. "none": success.
2. a collision: "timing" if timing stops took >= 25 % of the episode, else "control" (the
   executed motion hit something the keep-out list and the filter should have kept it from).
3. "reflex": the simulated robot side stopped the arm on an FR3 commanded-signal limit (it holds
   for the rest of the episode, as a real Franka does until error recovery).
4. "safety_stop": the controller ended the episode stopped for a safety reason, or safety stops
   took >= 25 % of it.
5. "timing": the controller never started moving (no chunk arrived), or timing stops took >= 25 %.
6. "control": the tool came near the target (within twice the success radius horizontally and
   twice the success height) but did not stay: the motion, not the goal, was wrong.
7. "perception": the arm moved (the tool got >= 5 cm from where it started) but never came near
   the target: the policy went somewhere the scene did not call for (misread target or obstacle).
8. "timeout": none of the above: the arm hardly moved and nothing was at fault.

pick_place (the cube into a bin, sim/pick_place.py) is judged by the simulator's own monitor, whose
label every /sim/contacts report carries; its failure labels, first rule that applies:

1. "none": success (the cube at rest in a bin; `side` is that bin, the task's two modes).
2. "collision": the arm hit the table or a bin.
3. "reflex": the robot side stopped the arm on an FR3 limit (the evaluation ends the episode at
   once: the arm holds for good, so nothing but a timeout could follow).
4. the monitor's label: "dropped" (the cube left the closed fingers and came to rest outside a
   bin), "wrong_place" (released on purpose outside a bin), "missed_grasp" (never lifted by the
   timeout), "timeout" (lifted, but not in a bin by the timeout, e.g. still held); "timeout" too
   when the episode ended without the monitor's label (no verdict came).

The reach task's target distances have no counterpart there and are NaN; the cube's resting place
at the end is in episodes.json (`cube_end`), its start in the episode's task.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from diffusion_controller.eval.diag_samples import (  # noqa: F401 (re-exported)
    DiagSample,
    diag_sample,
    stop_kind,
)

FAILURE_LABELS = ("none", "perception", "timing", "control", "safety_stop", "timeout", "reflex",
                  "collision", "missed_grasp", "dropped", "wrong_place")
# The pick_place monitor's labels (sim/pick_place.PickPlaceOutcome.label) that are failures.
PICK_PLACE_LABELS = ("collision", "dropped", "wrong_place", "missed_grasp", "timeout")
STOP_FRACTION = 0.25  # share of the episode in a stop that makes the stop the cause
MOVED_M = 0.05  # tool never further than this from its start: the arm did not really move
NEAR_FACTOR = 2.0  # "near the target": within this factor of the success zone

@dataclass
class EpisodeTrace:
    """What the evaluation recorded during one episode (times are time.monotonic())."""

    policy: str
    perturbation: str
    seed: int
    spec: Any  # the task's spec (sim/tasks.py): TaskSpec, PickPlaceSpec
    control_dt: float = 0.01
    t_enable: float = math.nan
    t_end: float = math.nan
    reports: list[dict[str, Any]] = field(default_factory=list)
    diags: list[DiagSample] = field(default_factory=list)
    diag_before: DiagSample | None = None
    diag_after: DiagSample | None = None
    commands: list[np.ndarray] = field(default_factory=list)
    check: dict[str, Any] = field(default_factory=dict)  # CheckCounts as a dict
    obstacle_updates: list[dict[str, Any]] = field(default_factory=list)
    end_reason: str = ""  # "verdict" | "wall timeout" | an error
    wall_s: float = math.nan


_LISTS = ("path", "latencies_ms", "task", "obstacle_updates", "cube_end")  # episodes.json only


@dataclass
class EpisodeResult:
    policy: str
    perturbation: str
    seed: int
    success: bool
    side: str
    collisions: int
    reflexes: int  # robot-side reflexes (sim_arm's FR3 limit checks) in the episode
    timed_out: bool
    time_s: float
    failure: str
    safety_violations: int
    position_violations: int
    keepout_violations: int
    malformed_commands: int
    keepout_inherited: int
    velocity_exceedances: int
    interventions: int
    brake_ticks: int
    filter_fallbacks: int
    missed_ticks: int
    min_clearance_m: float
    min_keepout_margin_m: float
    path_length_m: float
    min_target_distance_m: float
    final_target_distance_m: float
    rms_jerk: float
    max_jerk: float
    inference_p50_ms: float
    inference_p99_ms: float
    inference_samples: int
    tick_error_p99_ms: float
    running_fraction: float
    timing_stop_fraction: float
    safety_stop_fraction: float
    last_state: str
    last_reasons: str
    commands: int
    frames_dropped: int
    obstacle_shifted: bool
    end_reason: str
    wall_s: float
    path: list[list[float]] = field(default_factory=list, repr=False)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    task: dict[str, Any] = field(default_factory=dict, repr=False)
    obstacle_updates: list[dict[str, Any]] = field(default_factory=list, repr=False)
    cube_end: list[float] = field(default_factory=list, repr=False)  # pick_place: at the end

    # Columns of episodes.csv: everything but the per-episode lists.
    @staticmethod
    def csv_columns() -> list[str]:
        skip = set(_LISTS)
        return [k for k in EpisodeResult.__dataclass_fields__ if k not in skip]

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        for k in _LISTS:
            d.pop(k)
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def jerk_stats(commands: Sequence[np.ndarray], dt: float) -> tuple[float, float]:
    """(RMS, max |.|) of the third difference of successive commands over dt^3 (rad/s^3)."""
    if len(commands) < 4:
        return math.nan, math.nan
    q = np.asarray(commands, dtype=np.float64)
    j = np.diff(q, n=3, axis=0) / dt**3
    return float(np.sqrt(np.mean(j * j))), float(np.max(np.abs(j)))


def path_length(points: np.ndarray) -> float:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if p.shape[0] < 2:
        return 0.0
    return float(np.sum(np.linalg.norm(np.diff(p, axis=0), axis=1)))


def finite_percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of the finite values (NaN when there are none)."""
    v = [x for x in values if math.isfinite(x)]
    return float(np.percentile(v, q)) if v else math.nan


def inference_samples(diags: Iterable[DiagSample], before: DiagSample | None) -> list[float]:
    """Latencies of distinct inferences seen in the samples (when the inference count moved)."""
    out: list[float] = []
    last = before.inferences if before is not None else None
    for d in diags:
        if last is None or d.inferences != last:
            if math.isfinite(d.last_latency_ms) and (last is not None or d.inferences > 0):
                out.append(d.last_latency_ms)
            last = d.inferences
    return out


def _delta(after: DiagSample | None, before: DiagSample | None, key: str) -> int:
    if after is None:
        return 0
    b = getattr(before, key) if before is not None else 0
    return max(0, int(getattr(after, key)) - int(b))


def failure_label(
    *,
    success: bool,
    collided: bool,
    never_ran: bool,
    timing_fraction: float,
    safety_fraction: float,
    ended_in_safety_stop: bool,
    near_target: bool,
    moved: bool,
    reflex: bool = False,
) -> str:
    """The failure label by the rules in the module docstring."""
    if success:
        return "none"
    if collided:
        return "timing" if timing_fraction >= STOP_FRACTION else "control"
    if reflex:
        return "reflex"
    if ended_in_safety_stop or safety_fraction >= STOP_FRACTION:
        return "safety_stop"
    if never_ran or timing_fraction >= STOP_FRACTION:
        return "timing"
    if near_target:
        return "control"
    if moved:
        return "perception"
    return "timeout"


def pick_place_label(*, success: bool, collided: bool, reflex: bool, monitor: str) -> str:
    """The pick_place failure label by the rules in the module docstring; `monitor` is the
    simulator's label at the end ("" when it had not judged yet)."""
    if success:
        return "none"
    if collided:
        return "collision"
    if reflex:
        return "reflex"
    return monitor if monitor in PICK_PLACE_LABELS else "timeout"


def _target_distances(spec: Any, tool: np.ndarray) -> tuple[float, float, bool]:
    """(closest, final distance to the reach target, came near it); NaN/False for a task with
    no target point (pick_place) or no tool samples."""
    if not hasattr(spec, "target") or not tool.shape[0]:
        return math.nan, math.nan, False
    target = np.asarray(spec.target, dtype=np.float64)
    horiz = np.hypot(tool[:, 0] - target[0], tool[:, 1] - target[1])
    height = tool[:, 2] - target[2]
    min_dist = float(np.min(np.hypot(horiz, np.maximum(height, 0.0))))
    final_dist = float(np.hypot(horiz[-1], max(height[-1], 0.0)))
    near = bool(
        np.any(
            (horiz <= NEAR_FACTOR * spec.success_radius)
            & (height <= NEAR_FACTOR * spec.success_height)
        )
    )
    return min_dist, final_dist, near


def episode_result(trace: EpisodeTrace) -> EpisodeResult:
    """One row of metrics from one trace (see the module docstring for every definition)."""
    spec = trace.spec
    # The policy's episode starts at the enable: keep the last report before it (where the arm
    # stood) and everything after. Reports without a reception time are all kept.
    received = [r.get("received", math.inf) for r in trace.reports]
    before = [i for i, t in enumerate(received) if t <= trace.t_enable]
    reports = trace.reports[before[-1] :] if before else trace.reports
    last = reports[-1] if reports else {}
    start_time = float(reports[0].get("sim_time", 0.0)) if before else 0.0
    tool = np.array(
        [r["tool"] for r in reports if isinstance(r.get("tool"), list) and len(r["tool"]) == 3],
        dtype=np.float64,
    ).reshape(-1, 3)
    success = bool(last.get("success", False))
    collisions = int(last.get("collision_events", 0) or 0)
    collided = bool(last.get("collided", False)) or collisions > 0
    timed_out = not success and not collided
    min_dist, final_dist, near = _target_distances(spec, tool)
    length = path_length(tool)
    reach = float(np.max(np.linalg.norm(tool - tool[0], axis=1))) if tool.shape[0] else 0.0
    clearance = last.get("min_clearance_episode")
    diags = [d for d in trace.diags if d.t >= trace.t_enable]
    ran_at = next((i for i, d in enumerate(diags) if d.state == "running"), None)
    active = diags[ran_at:] if ran_at is not None else []
    kinds = Counter(stop_kind(d) for d in active)
    n = max(1, len(active))
    end_sample = trace.diag_after or (diags[-1] if diags else None)
    ended_safety = end_sample is not None and stop_kind(end_sample) == "safety"
    latencies = inference_samples(diags, trace.diag_before)
    rms_jerk, max_jerk = jerk_stats(trace.commands, trace.control_dt)
    check = trace.check
    malformed = int(check.get("malformed", 0))
    position = int(check.get("position", 0))
    keepout = int(check.get("keepout", 0))
    after = trace.diag_after or (diags[-1] if diags else None)
    tick_p99 = [d.tick_error_p99_ms for d in diags if math.isfinite(d.tick_error_p99_ms)]
    reflexes = int(last.get("reflexes", 0) or 0)
    if getattr(spec, "task", "panda_reach") == "pick_place":
        label = pick_place_label(success=success, collided=collided, reflex=reflexes > 0,
                                 monitor=str(last.get("label") or ""))
        timed_out = label in ("timeout", "missed_grasp")
    else:
        label = failure_label(
            success=success,
            collided=collided,
            never_ran=ran_at is None,
            timing_fraction=kinds["timing"] / n if active else 0.0,
            safety_fraction=kinds["safety"] / n if active else 0.0,
            ended_in_safety_stop=ended_safety,
            near_target=near,
            moved=reach >= MOVED_M,
            reflex=reflexes > 0,
        )
    cube_end = last.get("cube")
    margin = check.get("min_keepout_margin", math.inf)
    return EpisodeResult(
        policy=trace.policy,
        perturbation=trace.perturbation,
        seed=int(trace.seed),
        success=success,
        side=str(last.get("side", "none")),
        collisions=collisions,
        reflexes=reflexes,
        timed_out=timed_out,
        time_s=float(last.get("sim_time", math.nan)) - start_time,
        failure=label,
        safety_violations=malformed + position + keepout,
        position_violations=position,
        keepout_violations=keepout,
        malformed_commands=malformed,
        keepout_inherited=int(check.get("keepout_inherited", 0)),
        velocity_exceedances=int(check.get("velocity", 0)),
        interventions=_delta(after, trace.diag_before, "interventions"),
        brake_ticks=_delta(after, trace.diag_before, "brake_ticks"),
        filter_fallbacks=_delta(after, trace.diag_before, "filter_fallbacks"),
        missed_ticks=_delta(after, trace.diag_before, "missed_ticks"),
        min_clearance_m=float(clearance) if clearance is not None else math.nan,
        min_keepout_margin_m=float(margin) if margin is not None else math.nan,
        path_length_m=length,
        min_target_distance_m=min_dist,
        final_target_distance_m=final_dist,
        rms_jerk=rms_jerk,
        max_jerk=max_jerk,
        inference_p50_ms=finite_percentile(latencies, 50),
        inference_p99_ms=finite_percentile(latencies, 99),
        inference_samples=len(latencies),
        tick_error_p99_ms=max(tick_p99) if tick_p99 else math.nan,
        running_fraction=kinds["running"] / n if active else 0.0,
        timing_stop_fraction=kinds["timing"] / n if active else 0.0,
        safety_stop_fraction=kinds["safety"] / n if active else 0.0,
        last_state=end_sample.state if end_sample is not None else "",
        last_reasons=end_sample.reasons if end_sample is not None else "",
        commands=int(check.get("commands", len(trace.commands))),
        frames_dropped=int(last.get("frames_dropped", 0) or 0),
        obstacle_shifted=bool(trace.obstacle_updates),
        end_reason=trace.end_reason,
        wall_s=float(trace.wall_s),
        path=tool.tolist(),
        latencies_ms=latencies,
        task=spec.to_dict(),
        obstacle_updates=list(trace.obstacle_updates),
        cube_end=[float(v) for v in cube_end] if isinstance(cube_end, list) else [],
    )
