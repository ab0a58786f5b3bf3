"""What the node reports on /diagnostics, built from the core's immutable snapshots.

The entries are plain data (name, level, message, key/values) so they are tested without ROS; only
`to_msg` touches diagnostic_msgs. One entry per concern: the control loop (rates, tick timing,
QP statistics, watchdog state and reasons), inference (latency, outcomes), inputs (rejections by
reason, ages), and uncertainty. Levels follow diagnostic_msgs: OK, WARN, ERROR.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# parse_overruns: re-exported for the diagnostics' readers (the format lives with the log)
from diffusion_controller.control.loop_stats import format_overruns, parse_overruns  # noqa: F401

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass(frozen=True)
class StatusEntry:
    name: str
    level: int
    message: str
    values: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def value(self, key: str) -> str | None:
        return next((v for k, v in self.values if k == key), None)


def fmt(value: Any) -> str:
    """Compact, stable text for a diagnostic value (floats to 4 significant digits)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(fmt(v) for v in value)
    return str(value)


def kv(items: Iterable[tuple[str, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, fmt(v)) for k, v in items)


def loop_entry(prefix: str, status: Any, command_rate_hz: float, enabled: bool,
               estop_latched: bool) -> StatusEntry:
    """The control loop: state and watchdog reasons, rates, tick timing, QP statistics."""
    state = status.state
    reasons = list(status.reasons)
    if state == "estopped" or estop_latched:
        level, message = ERROR, "e-stop latched: " + ("; ".join(reasons) or "stopped")
    elif state == "running" and any(r.startswith("safety filter") for r in reasons):
        # holding in place or recovering out of a barrier's margin: the operator must know why
        level, message = WARN, "running, " + "; ".join(reasons)
    elif state == "running":
        level, message = OK, "running"
    elif state in ("braking", "holding"):
        level = WARN
        message = f"{state}: " + ("; ".join(reasons) or "stopped")
    else:
        level, message = OK, f"{state}" + (f": {'; '.join(reasons)}" if reasons else "")
    if status.exceptions or status.output_errors:
        level = max(level, WARN)
    since = getattr(status, "since_last_tick_s", None)  # present on newer LoopStatus
    if since is not None and state != "inactive" and since > 10.0 / max(status.rate_hz, 1e-9):
        level, message = ERROR, f"control loop stalled: no tick for {since:.3f} s"
    values = [
        ("state", state),
        ("reasons", reasons),
        ("enabled", enabled),
        ("estop_latched", estop_latched),
        ("rate_hz", status.rate_hz),
        ("command_rate_hz", command_rate_hz),
        ("tick_error_p50_ms", status.tick_error_ms.get("p50", math.nan)),
        ("tick_error_p99_ms", status.tick_error_ms.get("p99", math.nan)),
        ("tick_error_max_ms", status.tick_error_ms.get("max", math.nan)),
        ("compute_p50_ms", status.compute_ms.get("p50", math.nan)),
        ("compute_p99_ms", status.compute_ms.get("p99", math.nan)),
        ("missed_ticks", status.missed_ticks),
        ("ticks", status.ticks),
        ("published", status.published),
        ("interventions", status.interventions),
        ("brake_ticks", status.brake_ticks),
        ("filter_fallbacks", status.filter_fallbacks),
        ("qp_iterations_p50", status.qp_iterations.get("p50", math.nan)),
        ("qp_iterations_max", status.qp_iterations.get("max", math.nan)),
        ("qp_status", status.qp_status),
        ("chunks_accepted", status.chunks_accepted),
        ("chunks_rejected", status.chunks_rejected),
        ("chunks_superseded", status.chunks_superseded),
        ("exceptions", status.exceptions),
        ("output_errors", status.output_errors),
        ("last_error", status.last_error),
        ("realtime", status.realtime),
        ("since_last_tick_s", math.nan if since is None else since),
    ]
    # Whole-run figures (since start or the last ~/reset_statistics): what benchmarks read.
    lifetime = getattr(status, "lifetime", {}) or {}
    for key, label in (("tick_error_ms", "run_tick_error"), ("compute_ms", "run_compute"),
                       ("e2e_ms", "run_e2e")):
        stats = lifetime.get(key, {})
        for q in ("p50", "p99", "p999", "max", "n"):
            if q in stats:
                values.append((f"{label}_{q}" + ("" if q == "n" else "_ms"), stats[q]))
    values.append(("run_missed_ticks", getattr(status, "run_missed", status.missed_ticks)))
    values.append(("last_e2e_ms", getattr(status, "last_e2e_ms", math.nan)))
    values.append(("clock_jumps", getattr(status, "clock_jumps", 0)))
    values.append(("last_overrun", getattr(status, "last_overrun", {}) or "none"))
    values.append(("recent_overruns", format_overruns(getattr(status, "recent_overruns", []))))
    return StatusEntry(f"{prefix}: control loop", level, message, kv(values))


def inference_entry(prefix: str, stats: Any, backend: str, inference_rate_hz: float,
                    active: bool, process: Mapping[str, Any] | None = None,
                    stall_after: float = math.inf, mode: str = "thread") -> StatusEntry:
    """Inference: latency percentiles, outcomes, errors; the process's state in process mode.

    An inference running for longer than `stall_after` seconds is reported as stalled (ERROR)."""
    inflight = float(getattr(stats, "inflight_s", 0.0))
    if active and not stats.running:
        level, message = ERROR, "inference thread not running"
    elif active and inflight > stall_after:
        level, message = ERROR, f"inference stalled: no result for {inflight:.2f} s"
    elif stats.errors and stats.last_outcome == "error":
        level, message = WARN, f"inference failing: {stats.last_error}"
    elif stats.last_outcome and stats.last_outcome not in ("submitted",):
        level, message = WARN, f"no chunk: {stats.last_outcome}"
    else:
        level, message = OK, "ok" if active else "idle"
    values = [
        ("backend", backend),
        ("running", stats.running),
        ("inference_rate_hz", inference_rate_hz),
        ("latency_p50_ms", stats.latency_p50_ms),
        ("latency_p99_ms", stats.latency_p99_ms),
        ("last_latency_ms", stats.last_latency_ms),
        ("observation_to_chunk_p50_ms", stats.obs_age_p50_ms),
        ("inferences", stats.inferences),
        ("submitted", stats.submitted),
        ("rejected", stats.rejected),
        ("errors", stats.errors),
        ("overruns", stats.overruns),
        ("skipped", stats.skipped),
        ("last_outcome", stats.last_outcome),
        ("last_error", stats.last_error),
        ("last_reject_reason", stats.last_reject_reason),
        ("timings_ms", stats.last_timings_ms),
        ("inflight_s", inflight),
        ("mode", mode),
    ]
    if process is not None:
        # The backend's status: first-inference time, sample limit; a child's counters too.
        tag = "process" if mode == "process" else "backend"
        values += [(f"{tag}_{k}", v) for k, v in process.items()]
    return StatusEntry(f"{prefix}: inference", level, message, kv(values))


def inputs_entry(prefix: str, received: Mapping[str, int], rejected: Mapping[str, int],
                 last_reason: str, ages: Mapping[str, float], new_rejections: int
                 ) -> StatusEntry:
    """Sensor inputs: counts, rejections by reason, ages of the newest samples."""
    if new_rejections:
        level, message = WARN, f"{new_rejections} inputs rejected: {last_reason}"
    else:
        level, message = OK, "ok"
    values: list[tuple[str, Any]] = [(f"received_{k}", v) for k, v in received.items()]
    values += [(f"rejected_{k}", v) for k, v in rejected.items()]
    values += [(f"age_{k}_s", v) for k, v in ages.items()]
    values.append(("last_rejection", last_reason))
    return StatusEntry(f"{prefix}: inputs", level, message, kv(values))


def uncertainty_entry(prefix: str, spread: float | None, threshold: float, action: str,
                      num_samples: int, uncertain: bool, holding: bool) -> StatusEntry:
    """The sample-spread monitor."""
    if num_samples < 2:
        level, message = OK, "off (num_samples = 1)"
    elif uncertain:
        what = "holding" if holding else {"scale": "slowed down", "hold": "holding"}.get(
            action, "reported")
        level, message = WARN, f"uncertain ({what}): spread {fmt(spread)} > {fmt(threshold)} rad"
    else:
        level, message = OK, "confident"
    values = [("spread_rad", math.nan if spread is None else spread), ("threshold_rad", threshold),
              ("action", action), ("num_samples", num_samples), ("uncertain", uncertain),
              ("holding", holding)]
    return StatusEntry(f"{prefix}: uncertainty", level, message, kv(values))


def to_msg(entries: Iterable[StatusEntry], stamp: Any, hardware_id: str) -> Any:
    """diagnostic_msgs/DiagnosticArray from the entries."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    out = DiagnosticArray()
    out.header.stamp = stamp
    statuses = []
    for e in entries:
        st = DiagnosticStatus()
        st.level = bytes([e.level]) if isinstance(DiagnosticStatus().level, bytes) else e.level
        st.name = e.name
        st.message = e.message
        st.hardware_id = hardware_id
        st.values = [KeyValue(key=k, value=v) for k, v in e.values]
        statuses.append(st)
    out.status = statuses
    return out


class CoreRates:
    """Commands published and chunks submitted per second, between two diagnostics calls."""

    def __init__(self) -> None:
        self._prev: tuple[float, int, int] | None = None
        self._rejections_reported = 0

    def rates(self, now: float, published: int, submitted: int) -> tuple[float, float]:
        """(command rate, inference rate) in Hz since the previous call (NaN on the first)."""
        prev, self._prev = self._prev, (now, published, submitted)
        if prev is None or now <= prev[0]:
            return math.nan, math.nan
        return (published - prev[1]) / (now - prev[0]), (submitted - prev[2]) / (now - prev[0])

    def new_rejections(self, total: int) -> int:
        """Inputs refused since the previous call."""
        new, self._rejections_reported = total - self._rejections_reported, total
        return new


def core_entries(prefix: str, snap: Any, rates: CoreRates, now: float, enabled: bool,
                 estop_latched: bool, active: bool) -> list[StatusEntry]:
    """The loop, inference, inputs and uncertainty entries from a ControllerStatus snapshot."""
    cmd_rate, inf_rate = rates.rates(now, snap.loop.published, snap.worker.submitted)
    s = snap.worker_settings
    return [
        loop_entry(prefix, snap.loop, cmd_rate, enabled, estop_latched),
        inference_entry(prefix, snap.worker, snap.backend, inf_rate, active,
                        process=snap.backend_status, stall_after=snap.chunk_timeout,
                        mode=snap.inference_mode),
        inputs_entry(prefix, snap.received, snap.rejected, snap.last_rejection, snap.input_ages,
                     rates.new_rejections(sum(snap.rejected.values()))),
        uncertainty_entry(prefix, snap.worker.last_spread, s.uncertainty_threshold,
                          s.uncertainty_action, s.num_samples, snap.worker.uncertain,
                          snap.worker.holding),
    ]


def node_entry(prefix: str, lifecycle: str, failure: str, pending: list[str],
               rt_threads: Mapping[str, Any], gc_summary: Mapping[str, Any],
               clock_jump_note: str) -> StatusEntry:
    """The node itself: lifecycle state (ERROR with the reason after a failed transition),
    settings waiting for the next configure, what real-time scheduling was granted, GC pauses."""
    values: list[tuple[str, Any]] = [("lifecycle", lifecycle), ("pending_on_configure", pending),
                                     ("pid", os.getpid())]
    if rt_threads:
        values.append(("realtime_threads", rt_threads.get("threads", {})))
        values.append(("memory_locked", rt_threads.get("memory_locked", False)))
        if rt_threads.get("errors"):
            values.append(("realtime_errors", rt_threads["errors"]))
    values += [("gc_collections", gc_summary["collections"]),
               ("gc_max_pause_ms", gc_summary["max_pause_ms"]),
               ("gc_frozen", gc_summary["frozen"])]
    if clock_jump_note:
        values.append(("last_clock_jump", clock_jump_note))
    return StatusEntry(f"{prefix}: node", ERROR if failure else OK, failure or lifecycle,
                       kv(values))
