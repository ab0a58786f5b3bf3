"""The control loop's vocabulary for its readers: state names and the immutable snapshots
(the measured joint state in, the status out) that cross threads by reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffusion_controller.control.chunk_scheduler import SubmitResult
from diffusion_controller.control.types import Command

INACTIVE = "inactive"  # disabled: nothing is published
WAITING = "waiting"  # enabled, no joint state yet: nothing is published
RUNNING = "running"  # tracking the scheduler's reference through the filter
BRAKING = "braking"  # a fault or a stop request: decelerating through filter.brake
HOLDING = "holding"  # stopped: publishing the hold command, waiting for a fresh chunk
ESTOPPED = "estopped"  # e-stop latched: braking / holding until reset()

_STATUS_CODES = {"ok": 0, "braking": 1, "holding": 2}


@dataclass(frozen=True)
class JointSnapshot:
    """The latest measured joint state, immutable so it can be swapped between threads."""

    q: np.ndarray
    v: np.ndarray
    stamp: float


@dataclass(frozen=True)
class LoopStatus:
    """An immutable summary of the loop for diagnostics; times in milliseconds."""

    state: str
    reasons: tuple[str, ...]
    ticks: int
    published: int
    missed_ticks: int
    interventions: int
    brake_ticks: int
    filter_fallbacks: int
    exceptions: int
    output_errors: int
    chunks_accepted: int
    chunks_rejected: int
    chunks_superseded: int
    joint_states_rejected: int
    last_command: Command | None
    last_submit: SubmitResult | None
    last_error: str
    rate_hz: float
    window: int
    tick_error_ms: dict[str, float]
    compute_ms: dict[str, float]
    qp_iterations: dict[str, float]
    qp_status: dict[str, int]
    since_last_tick_s: float  # monotonic seconds since the last tick began (a stalled loop shows)
    realtime: dict[str, Any] = field(default_factory=dict)
    # whole-run histograms (ms): tick-start error, compute per tick, observation -> command
    lifetime: dict[str, dict[str, float]] = field(default_factory=dict)
    last_e2e_ms: float = float("nan")
    clock_jumps: int = 0
    run_missed: int = 0  # missed ticks since start or reset_statistics()
    last_overrun: dict[str, float] = field(default_factory=dict)  # the latest missed deadline
    # the latest OVERRUN_LOG missed deadlines, oldest first (t_mono: when the late tick began)
    recent_overruns: list[dict[str, float]] = field(default_factory=list)
