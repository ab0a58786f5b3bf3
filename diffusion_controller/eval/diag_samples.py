"""The controller's /diagnostics, reduced to what the evaluation's metrics use: one `DiagSample`
per DiagnosticArray (the loop's state, reasons and counters, the latest inference's latency), and
the classification of a sample as running, a timing stop or a safety stop (eval/metrics.py's
module docstring gives the rules). Plain data: built from {status name: {key: value}}, no ROS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TIMING_WORDS = (
    "stale",
    "no fresh chunk",
    "no joint_states",
    "no image",
    "no chunk",
    "chunk exhausted",
    "waiting for a fresh chunk",
    "in the future",
    "no reference",
)
_SAFETY_WORDS = (
    "e-stop",
    "tracking error",
    "safety filter",
    "non-finite",
    "paused",
    "exception",
    "brake failed",
    "cannot start",
)
_STOP_STATES = ("braking", "holding", "estopped", "waiting")


@dataclass(frozen=True)
class DiagSample:
    """One /diagnostics message from the controller, reduced to what the metrics use."""

    t: float  # time.monotonic() at reception
    state: str = ""
    reasons: str = ""
    interventions: int = 0
    brake_ticks: int = 0
    filter_fallbacks: int = 0
    missed_ticks: int = 0
    tick_error_p99_ms: float = math.nan
    inferences: int = 0
    last_latency_ms: float = math.nan
    latency_p50_ms: float = math.nan


def _num(values: Mapping[str, str], key: str, kind: type = float) -> Any:
    text = values.get(key)
    try:
        x = float(text) if text is not None else math.nan
    except ValueError:
        x = math.nan
    if kind is int:
        return int(x) if math.isfinite(x) else 0
    return x


def diag_sample(t: float, statuses: Mapping[str, Mapping[str, str]]) -> DiagSample | None:
    """A DiagSample from {status name: {key: value}} of one DiagnosticArray, or None when it
    holds no control-loop entry (e.g. the node is not configured yet)."""
    loop = next((v for k, v in statuses.items() if k.endswith(": control loop")), None)
    if loop is None:
        return None
    inf = next((v for k, v in statuses.items() if k.endswith(": inference")), {})
    return DiagSample(
        t=float(t),
        state=str(loop.get("state", "")),
        reasons=str(loop.get("reasons", "")),
        interventions=_num(loop, "interventions", int),
        brake_ticks=_num(loop, "brake_ticks", int),
        filter_fallbacks=_num(loop, "filter_fallbacks", int),
        missed_ticks=_num(loop, "missed_ticks", int),
        tick_error_p99_ms=_num(loop, "tick_error_p99_ms"),
        inferences=_num(inf, "inferences", int),
        last_latency_ms=_num(inf, "last_latency_ms"),
        latency_p50_ms=_num(inf, "latency_p50_ms"),
    )


def stop_kind(sample: DiagSample) -> str:
    """ "running", "timing", "safety" or "other" for one sample (see the module docstring)."""
    if sample.state == "running":
        return "running"
    reasons = sample.reasons.lower()
    if sample.state == "estopped" or any(w in reasons for w in _SAFETY_WORDS):
        return "safety"
    if sample.state in _STOP_STATES and (
        sample.state == "waiting" or any(w in reasons for w in _TIMING_WORDS)
    ):
        return "timing"
    return "other"
