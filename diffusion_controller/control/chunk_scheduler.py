"""Which chunk is in force, and the C2 reference the loop tracks: latency drop, hand-over, stop.

The inference side delivers a chunk 50-200 ms after the observation it was computed from, so its
first actions are already in the past. The scheduler drops those, and instead of jumping onto the
new chunk it starts a quintic transition from the state the reference is in *now* (q, v, a) and
joins the new chunk's spline after a blend window. The transition's duration is the shortest
candidate (from `blend_time` up to the chunk's end) whose peak jerk stays within `jerk_limit`, so
the acceleration never changes by more than jerk_limit * dt between ticks; a chunk that cannot be
joined that gently is rejected and the current reference stays in force.

When the data of the current chunk runs out without a successor, the reference decelerates to rest
on a jerk- and acceleration-bounded profile and reports "chunk exhausted". Only the loop thread
calls into a scheduler; it holds no locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffusion_controller.control.interpolation import (
    PiecewisePolynomial,
    State,
    concatenate,
    max_abs_jerk,
    quintic,
    single,
    spline_through,
    stop_coefficients,
    stop_duration,
)
from diffusion_controller.control.types import Chunk
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.spec import check_fields

EXHAUSTED = "chunk exhausted"


@dataclass(frozen=True)
class SchedulerConfig:
    """Timing and smoothness of chunk hand-overs (seconds, radians).

    The first four fields are the controller settings of the same names (their defaults, ranges
    and meaning are written in diffusion_controller/settings/controller.py and checked against
    it); control.assembly.scheduler_config(values, limits) builds one. Here: `latency_margin`:
    actions due at or before now + this are dropped, they could not be tracked in time;
    `blend_time`: the shortest hand-over from the current reference onto a new chunk (0: as
    short as the jerk limit allows); `chunk_timeout`: chunks whose observation stamp t0 is older
    than this are rejected as stale; `stamp_tolerance`: chunks stamped further than this in the
    future are rejected (clock mismatch). The others are the scheduler's own."""

    latency_margin: float
    blend_time: float
    chunk_timeout: float
    stamp_tolerance: float
    min_remaining_actions: int = 2
    """A chunk needs at least this many actions left after the latency drop."""
    jerk_limit: float | Sequence[float] = 500.0
    """Peak |jerk| (rad/s^3, scalar or per joint) allowed on hand-over and stop profiles (the
    node gives the safety filter's own)."""
    stop_acceleration: float | Sequence[float] = 2.0
    """Peak |acceleration| (rad/s^2) of the deceleration when a chunk runs out (the node gives
    the safety filter's own)."""
    blend_candidates: int = 16
    """How many transition durations (geometric, blend_time..chunk end) are tried."""

    def __post_init__(self) -> None:
        check_fields(self, SPECS)
        if int(self.min_remaining_actions) < 2:
            raise ValueError("SchedulerConfig.min_remaining_actions must be >= 2")
        if int(self.blend_candidates) < 1:
            raise ValueError("SchedulerConfig.blend_candidates must be >= 1")
        for name in ("jerk_limit", "stop_acceleration"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim > 1 or not np.all(np.isfinite(arr)) or np.any(arr <= 0.0):
                raise ValueError(f"SchedulerConfig.{name} must be positive and finite")


@dataclass(frozen=True)
class SubmitResult:
    """What became of a submitted chunk."""

    accepted: bool
    dropped_actions: int = 0
    reason: str = ""
    seq: int = -1
    blend_s: float = 0.0  # duration of the hand-over transition (accepted chunks)
    max_jerk: float = 0.0  # peak |jerk| of the transition, rad/s^3


@dataclass(frozen=True)
class Reference:
    """The reference state for one tick."""

    q: np.ndarray
    v: np.ndarray
    a: np.ndarray
    seq: int
    remaining: float  # seconds of chunk data left (<= 0 once exhausted)
    exhausted: bool = False  # past the chunk's last action: decelerating or at rest
    stopped: bool = False  # exhausted and at rest
    reason: str = ""


def _per_joint(value: float | Sequence[float], joint_count: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return np.full(joint_count, float(arr[0]))
    if arr.size != joint_count:
        raise ValueError(f"SchedulerConfig.{name} has {arr.size} values for {joint_count} joints")
    return arr


class ChunkScheduler:
    """Holds the chunk in force and the piecewise-polynomial reference built from it."""

    def __init__(self, joint_count: int, config: SchedulerConfig) -> None:
        if int(joint_count) < 1:
            raise ValueError("joint_count must be >= 1")
        self.joint_count = int(joint_count)
        self.config = config
        self._jerk = _per_joint(self.config.jerk_limit, self.joint_count, "jerk_limit")
        self._stop_acc = _per_joint(
            self.config.stop_acceleration, self.joint_count, "stop_acceleration"
        )
        self._chunk: Chunk | None = None
        self._spline: PiecewisePolynomial | None = None  # the chunk's kept actions
        self._traj: PiecewisePolynomial | None = None  # what reference() evaluates
        self._data_end = -np.inf

    # ------------------------------------------------------------------ inputs
    def check(self, chunk: Chunk) -> str:
        """Reasons a chunk is malformed regardless of time ("" when well-formed). Thread-safe."""
        pos = getattr(chunk, "positions", None)
        if not isinstance(pos, np.ndarray) or pos.ndim != 2 or pos.dtype.kind not in "fiu":
            return "chunk positions must be a 2-D numeric array [H, J]"
        if pos.shape[1] != self.joint_count:
            return f"wrong width: chunk has {pos.shape[1]} joints, expected {self.joint_count}"
        if pos.shape[0] < 1:
            return "empty chunk"
        try:
            t0, dt = float(chunk.t0), float(chunk.dt)
        except (TypeError, ValueError):
            return "chunk t0 and dt must be numbers"
        if not (np.isfinite(t0) and np.isfinite(dt)):
            return "non-finite chunk t0 or dt"
        if dt <= 0.0:
            return f"chunk dt must be > 0, got {dt:g}"
        if not np.all(np.isfinite(pos)):
            return "non-finite values in chunk positions"
        return ""

    def submit(self, chunk: Chunk, now: float) -> SubmitResult:
        """Accept `chunk` at time `now` (same clock as chunk.t0) or say why not."""
        seq = int(getattr(chunk, "seq", -1))
        reason = self.check(chunk)
        if reason:
            return SubmitResult(False, 0, reason, seq)
        cfg = self.config
        t0, dt = float(chunk.t0), float(chunk.dt)
        cur = self._chunk
        if cur is not None:
            if seq <= cur.seq:
                return SubmitResult(False, 0, f"out of order: seq {seq} <= current {cur.seq}", seq)
            if t0 < cur.t0:
                return SubmitResult(
                    False, 0, f"out of order: t0 {t0:.3f} older than current {cur.t0:.3f}", seq
                )
        if t0 > now + cfg.stamp_tolerance:
            return SubmitResult(False, 0, f"chunk stamped {t0 - now:.3f} s in the future", seq)
        if now - t0 > cfg.chunk_timeout:
            age = now - t0
            return SubmitResult(
                False, 0, f"stale chunk: t0 is {age:.3f} s old (max {cfg.chunk_timeout} s)", seq
            )
        times = t0 + dt * np.arange(chunk.horizon)
        keep = times > now + cfg.latency_margin
        kept = int(np.count_nonzero(keep))
        dropped = chunk.horizon - kept
        if kept == 0:
            return SubmitResult(False, dropped, "chunk wholly in the past", seq)
        if kept < cfg.min_remaining_actions:
            return SubmitResult(
                False, dropped, f"only {kept} action(s) left after the latency drop", seq
            )
        spline = spline_through(times[keep], chunk.positions[keep])
        start = self._state_at(now)
        if start is None:  # nothing in force: start at rest where the chunk's data starts
            q0 = chunk.positions[keep][0].astype(np.float64)
            z = np.zeros(self.joint_count)
            start = State(now, q0, z, z)
        joined = self._join(start, spline)
        if isinstance(joined, str):
            return SubmitResult(False, dropped, joined, seq)
        traj, blend, jerk = joined
        self._chunk = chunk
        self._spline = spline
        self._traj = traj
        self._data_end = spline.end
        return SubmitResult(True, dropped, "", seq, blend, jerk)

    def rebase(
        self, now: float, q: np.ndarray, v: np.ndarray | None = None, a: np.ndarray | None = None
    ) -> None:
        """Restart the reference from a given state (e.g. the commanded one after a brake).

        It joins the rest of the current chunk if that can be done within the jerk limit, and
        otherwise comes to rest from that state. With no chunk at all it holds (q) at rest.
        """
        q = np.array(q, dtype=np.float64).reshape(-1)
        z = np.zeros(self.joint_count)
        v = z if v is None else np.array(v, dtype=np.float64).reshape(-1)
        a = z if a is None else np.array(a, dtype=np.float64).reshape(-1)
        for name, arr in (("q", q), ("v", v), ("a", a)):
            if arr.shape != (self.joint_count,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"rebase: {name} must be {self.joint_count} finite values")
        start = State(now, q, v, a)
        if self._spline is not None:
            joined = self._join(start, self._spline)
            if not isinstance(joined, str):
                self._traj = joined[0]
                return
        self._traj = self._stop_from(start)
        self._data_end = min(self._data_end, now)

    def clear(self) -> None:
        """Forget the chunk and the reference (reference() returns None until the next chunk)."""
        self._chunk = None
        self._spline = None
        self._traj = None
        self._data_end = -np.inf

    # ----------------------------------------------------------------- outputs
    def current(self) -> Chunk | None:
        """The chunk in force, as submitted (the planner re-times it for warm start / prefix)."""
        return self._chunk

    def reference(self, now: float) -> Reference | None:
        """The reference (q, v, a) at `now`, or None when there is nothing to track."""
        traj = self._traj
        if traj is None:
            return None
        q, v, a = traj.evaluate(now)
        seq = self._chunk.seq if self._chunk is not None else -1
        remaining = self._data_end - now
        if remaining >= 0.0:
            return Reference(q, v, a, seq, remaining)
        reason = EXHAUSTED if self._chunk is not None else "no chunk"
        return Reference(q, v, a, seq, remaining, True, now >= traj.end, reason)

    def sample(self, times: np.ndarray) -> np.ndarray | None:
        """Reference positions [N, J] at future times (MPC horizon, planner prefix), or None."""
        if self._traj is None:
            return None
        return self._traj.sample(times)

    # ---------------------------------------------------------------- building
    def _state_at(self, now: float) -> State | None:
        if self._traj is None:
            return None
        q, v, a = self._traj.evaluate(now)
        return State(now, q, v, a)

    def _stop_from(self, start: State) -> PiecewisePolynomial:
        duration = stop_duration(start.v, start.a, self._stop_acc, self._jerk)
        return single(start.t, duration, stop_coefficients(start.q, start.v, start.a, duration))

    def _join(
        self, start: State, spline: PiecewisePolynomial
    ) -> tuple[PiecewisePolynomial, float, float] | str:
        """Transition + rest of spline + stop; or the reason no transition fits the jerk limit."""
        cfg = self.config
        now = start.t
        t_hi = spline.end - now
        if t_hi <= 1e-6:
            return "chunk wholly in the past"
        t_lo = max(cfg.blend_time, spline.start - now, 1e-3)
        if t_lo >= t_hi:
            durations = np.array([t_hi])
        else:
            durations = np.geomspace(t_lo, t_hi, int(cfg.blend_candidates))
        t_join = now + durations
        q1, v1, a1 = spline.sample_states(t_join)
        coeffs = quintic(start.q, start.v, start.a, q1, v1, a1, durations)  # [M, 6, J]
        jerk = max_abs_jerk(coeffs, durations)  # [M, J]
        fits = np.all(jerk <= self._jerk, axis=1)
        if not np.any(fits):
            worst = float(np.min(np.max(jerk / self._jerk, axis=1)))
            return (
                f"hand-over would need {worst:.1f}x the jerk limit within the chunk's {t_hi:.2f} s"
            )
        m = int(np.argmax(fits))
        duration = float(durations[m])
        parts = [single(now, duration, coeffs[m])]
        rest = spline.after(now + duration)
        if rest is not None:
            parts.append(rest)
        end_q, end_v, end_a = parts[-1].evaluate(parts[-1].end)
        parts.append(self._stop_from(State(parts[-1].end, end_q, end_v, end_a)))
        return concatenate(parts), duration, float(np.max(jerk[m]))
