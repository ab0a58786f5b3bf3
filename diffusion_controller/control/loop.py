"""The fixed-rate control loop: scheduler -> safety filter -> output, with watchdogs and brakes.

One thread of its own ticks on absolute deadlines of time.monotonic() (start + k * period); a
missed deadline is counted and the loop skips to the next future one, so it never bursts. Inputs
from other threads never make it wait on a lock: joint states and image stamps are immutable
snapshots swapped in by reference, chunks travel through a single-slot mailbox the loop empties at
the start of a tick, and flags (enable, e-stop, pause) are plain attribute writes. The scheduler
and the safety filter are touched only by the loop thread (or by whoever calls `tick()` directly,
for deterministic tests).

Every command that leaves through `output` comes out of the safety filter (`step` or `brake`);
anything that goes wrong in a tick becomes a brake, and the reasons are kept for diagnostics.
Statistics go into preallocated ring buffers; `status()` summarises them on demand, in the caller's
thread.

States: inactive (disabled, silent) -> waiting (no usable joint state yet, silent) -> holding
(filter reset from the measured state, publishing the hold) -> running (tracking chunks). A
watchdog fault, pause, an exception or the end of the chunk data leads to braking and then holding;
motion resumes only with a chunk accepted after the stop began, from the commanded state (the
reference is rebased there). The e-stop brakes and stays latched until `reset()`; disabling brakes
to a stop, publishes the hold once, then goes silent.

Timing statistics come twice: recent percentiles over a window of ticks, and whole-run histograms
(fixed bins, so a ten-minute benchmark or a soak reports its true p99 and max at a constant cost per
tick). End-to-end latency is measured here too: from a chunk's observation stamp (t0) to the
moment the first command computed from that chunk is handed to `output`, i.e. the first tick after
the chunk is accepted that tracks the scheduler's reference (a tick that brakes does not count).

A stamp clock that steps backwards (a simulator reset under sim time, a system clock stepped by
hand) would leave every stamp seen so far in the future; one that leaps forwards (by more than
`clock_jump_forward` s beyond the monotonic time that passed) makes every input look stale at once.
Either way the loop brakes to a standstill, forgets the stamps of the old timeline (joint state,
image, chunks), tells its owner through `on_clock_jump` (so input filters accept the new timeline),
and resumes only with a chunk accepted after the jump, once the arm has stopped.

Where the parts live: this module holds the thread and the tick (what runs in which order);
control/loop_inputs.py what other threads hand in (snapshots, mailbox, posted calls, operator
flags); control/loop_stops.py the brake, fault, clock-jump and resync transitions;
control/loop_output.py the command hand-over and `status()`; control/loop_stats.py and
control/loop_status.py the statistics and the snapshot types; control/ticker.py the deadlines.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diffusion_controller.control.chunk_scheduler import EXHAUSTED, ChunkScheduler, SubmitResult
from diffusion_controller.control.loop_inputs import LoopInputs, _Ticket
from diffusion_controller.control.loop_output import LoopOutput
from diffusion_controller.control.loop_stats import OVERRUN_LOG, Histogram, LoopStats  # noqa: F401
from diffusion_controller.control.loop_status import (  # noqa: F401
    BRAKING,
    ESTOPPED,
    HOLDING,
    INACTIVE,
    RUNNING,
    WAITING,
    JointSnapshot,
    LoopStatus,
)
from diffusion_controller.control.loop_stops import SETTLE_SAMPLES, LoopStops
from diffusion_controller.control.ticker import (
    apply_realtime,
    run_ticker,
    spin_for,  # noqa: F401
    switch_interval_for,  # noqa: F401
)
from diffusion_controller.control.types import Chunk, Command, FilterResult
from diffusion_controller.control.watchdogs import Watchdogs

# OVERRUN_LOG, Histogram, spin_for, switch_interval_for, the state names, JointSnapshot and
# LoopStatus (noqa F401 above): re-exported for the loop's importers, who knew them from here.

if TYPE_CHECKING:
    from diffusion_controller.control.safety_filter import SafetyFilter
    from diffusion_controller.control.stream import TrajectoryStream


class ControlLoop(LoopInputs, LoopStops, LoopOutput):
    """Fixed-rate loop driving `output(Command)` from chunks, through the safety filter."""

    def __init__(
        self,
        safety: SafetyFilter,
        scheduler: ChunkScheduler,
        watchdogs: Watchdogs,
        output: Callable[[Command], None],
        rate_hz: float | None = None,
        clock: Callable[[], float] = time.time,
        *,
        realtime: bool = False,
        priority: int = 80,
        cpus: Sequence[int] | None = None,
        spin_s: float = 0.0002,
        stats_window: int = 2048,
        velocity_tolerance: float = 1e-3,
        on_clock_jump: Callable[[float], None] | None = None,
        clock_jump_tolerance: float | None = None,
        clock_jump_forward: float = 1.0,
    ) -> None:
        # The filter integrates at its control_rate_hz setting; the loop runs at it unless told
        # otherwise, and a different rate is refused.
        filter_rate = safety.config.control_rate_hz
        rate_hz = float(filter_rate if rate_hz is None else rate_hz)
        if not np.isfinite(rate_hz) or rate_hz <= 0.0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        if abs(float(filter_rate) - rate_hz) > 1e-9:
            raise ValueError(
                f"the safety filter integrates at {filter_rate} Hz, the loop runs at {rate_hz} Hz"
            )
        if spin_s < 0.0 or stats_window < 16:
            raise ValueError("spin_s must be >= 0 and stats_window >= 16")
        self.safety = safety
        self.scheduler = scheduler
        self.watchdogs = watchdogs
        self.joint_count = scheduler.joint_count
        self._output = output
        self._clock = clock
        self.rate_hz = rate_hz
        self.period = 1.0 / rate_hz
        self._spin_s = float(spin_s)
        self._realtime = bool(realtime)
        self._priority = int(priority)
        self._cpus = list(cpus) if cpus is not None else None
        self._vel_tol = float(velocity_tolerance)
        self._on_clock_jump = on_clock_jump
        # a backwards step larger than this is a clock jump, not rounding (default: one period)
        self._jump_tol = (
            self.period if clock_jump_tolerance is None else float(clock_jump_tolerance)
        )
        self._jump_fwd = float(clock_jump_forward)
        cfg = safety.config
        self._mpc_steps = int(cfg.mpc_horizon) if cfg.safety_mode == "mpc" else 0
        self._mpc_offsets = self.period * np.arange(1, self._mpc_steps + 1)

        # written by other threads, read by the loop (single reference writes)
        self._joint: JointSnapshot | None = None
        self._image_stamp: float | None = None
        self._mailbox: deque[tuple[Chunk, _Ticket | None]] = deque(maxlen=1)
        self._posted: deque[Callable[[], None]] = deque()
        self._enabled = False
        self._enable_deadline = math.inf
        self._estop = False
        self._paused = False
        self._reset_request = False
        # Re-seed the commanded state from the measurement, at rest, and only from a settled
        # measurement (loop_stops.SETTLE_SAMPLES states agreeing): after a fault, when motion
        # resumes, by a certified glide (the arm's controller still holds the last command, so
        # a step would be a discontinuity); after an operator's e-stop reset, at once.
        self._resync = False
        self._estop_cleared = False
        self._recent_q: deque[tuple[float, np.ndarray]] = deque(maxlen=SETTLE_SAMPLES)
        self._glide: Any = None  # loop thread: the resync glide in progress, if any
        # ticks of the filter's certified continuation attached to each command (0: none)
        self.plan_steps = 0
        # a streamed trajectory output follows missed slots (loop_output._follow_missed)
        self.follow_on_miss = False
        # the trajectory output's stream (loop thread only), that a resync re-seeds from
        self.arm_reference: TrajectoryStream | None = None  # (loop_stops._seed_from_arm)
        # slots followed; skipped since the last tick; resyncs seeded from the stream
        self._followed = self._missed_slots = self._reseeds = 0

        # loop-thread state
        self._state = INACTIVE
        self._reasons: tuple[str, ...] = ("disabled",)
        self._initialised = False
        self._stop_since: float | None = None
        self._exhausted = False  # stopped because the last chunk ran out (not a fault)
        self._last_chunk_time: float | None = None
        self._current_chunk: Chunk | None = None
        self._last_command: Command | None = None
        self._last_submit: SubmitResult | None = None
        self._last_error = ""
        self._last_now = 0.0
        self._have_now = False  # _last_now holds a real reading (for the clock-jump check)
        self._last_tick_mono = float("-inf")
        self._pending_e2e: float | None = None  # t0 of an accepted chunk not yet reflected
        self._tracking = False  # this tick's command came from the scheduler's reference
        self._last_e2e = float("nan")
        self._clock_jumps = 0
        self._rest_required = ""  # why the loop must reach a standstill before moving again
        self._prev_tick_mono = float("-inf")

        # counters and rings
        self._ticks = 0
        self._published = 0
        self._interventions = 0
        self._brake_ticks = 0
        self._fallbacks = 0
        self._exceptions = 0
        self._output_errors = 0
        self._accepted = 0
        self._rejected = 0
        self._superseded = 0
        self._joint_rejects = 0
        self._stats = LoopStats(stats_window)

        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._realtime_granted: dict[str, Any] = {"requested": self._realtime}

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Start the loop thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread; True when it has ended. Call after braking (set_enabled(False))."""
        self._stop_event.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        self._realtime_granted = apply_realtime(self._realtime, self._priority, self._cpus)
        run_ticker(self.period, self._spin_s, self._stop_event, self.tick, self._stats.started,
                   self._overrun)

    # ------------------------------------------------------------------ the tick
    def tick(self, now_mono: float | None = None) -> Command | None:
        """One control step; returns the command it published (None when nothing was).

        The command is the filter's state for the end of the tick, so its stamp is the stamp
        clock's reading at the start of the tick plus one period.
        """
        t_start = time.perf_counter()
        c_start = time.thread_time()
        if now_mono is None:
            now_mono = time.monotonic()
        self._prev_tick_mono = self._last_tick_mono
        self._last_tick_mono = now_mono
        self._ticks += 1
        cmd: Command | None = None
        result: FilterResult | None = None
        now = float("nan")
        self._tracking = False
        try:
            now = float(self._clock())
            self._follow_missed()
            result = self._tick_body(now)
            self._last_now = now
            self._have_now = True
        except Exception as exc:  # any fault in a tick becomes a brake
            self._exceptions += 1
            self._last_error = f"exception in tick: {type(exc).__name__}: {exc}"
            result = self._fault_brake(now, self._last_error)
        t_body = time.perf_counter()
        if result is not None:
            if not np.isfinite(now):  # the clock itself failed: stamp from the last good reading
                now = self._last_now + self.period
                self._last_now = now
            cmd = self._publish(now, result, t_start)
        t_end = time.perf_counter()
        # where the tick went, kept for an overrun's record: everything up to the command
        # (filter included), the filter alone, the hand-over to the output, and the CPU time
        # this thread got meanwhile (much less than the wall time: it was not running, because
        # the CPU was taken or it waited for the GIL)
        self._stats.sections = (t_body - t_start, result.details.get("tick_ms", math.nan) * 1e-3
                          if result is not None else 0.0, t_end - t_body,
                          time.thread_time() - c_start)
        elapsed = t_end - t_start
        self._stats.computed(elapsed)
        return cmd

    def _tick_body(self, now: float) -> FilterResult | None:
        if not np.isfinite(now):
            raise ValueError(f"clock returned {now}")
        if self._have_now:
            step = now - self._last_now
            if step < -self._jump_tol or step - (
                self._last_tick_mono - self._prev_tick_mono
            ) > self._jump_fwd:
                self._clock_jumped(now)
        while self._posted:
            self._posted.popleft()()
        if self._reset_request:
            self._reset_request = False
            self.scheduler.clear()
            self._current_chunk = None
            self._stop_since = now
        snap = self._joint

        if self._enabled and time.monotonic() > self._enable_deadline:
            self._enabled = False  # the deadman lapsed
            self._last_error = "enable lapsed: not renewed within enable_timeout"
        if not self._enabled:
            return self._disable_step(now)
        if snap is None:
            self._set_state(WAITING, ("no joint_states received",))
            return None
        if not self._initialised:
            age = now - snap.stamp
            limit = self.watchdogs.config.joint_state_timeout
            if age > limit:  # never start from an old measurement: the arm may be elsewhere
                self._set_state(WAITING, (f"waiting for a fresh joint state: the newest is "
                                          f"{age:.3f} s old (joint_state_timeout {limit:g} s)",))
                return None
            if why := self._start_from(now, snap):  # the stream's state, or the measurement
                self._set_state(WAITING, (why,))
                return None
            self.scheduler.clear()
            self._current_chunk = None
            self._stop_since = now
            self._initialised = True
            self._state = HOLDING

        try:
            chunk, ticket = self._mailbox.popleft()
        except IndexError:
            pass
        else:
            self._take_chunk(chunk, ticket, now)

        commanded = self._last_command.positions if self._last_command is not None else None
        status = self.watchdogs.evaluate(
            now,
            snap.stamp,
            self._image_stamp,
            self._last_chunk_time,
            self._estop,
            self._paused,
            commanded_q=commanded,
            measured_q=snap.q,
        )
        if self._estop:
            self._exhausted = False
            return self._brake(now, ESTOPPED, status.reasons)
        if self._resync and self._estop_cleared and self._state == HOLDING:
            # an operator cleared the e-stop: the arm may have been moved meanwhile
            self._estop_cleared = not self._resync_to(now)
            self._resync = self._estop_cleared
        if not status.ok:
            self._exhausted = False
            if self._state == RUNNING:  # once per fault: restart from the measurement, at rest
                self._resync = True
            return self._brake(now, None, status.reasons)
        if self._rest_required:
            if self._state != HOLDING:
                return self._brake(now, None, (self._rest_required,))
            self._rest_required = ""

        if self._state != RUNNING:
            fresh = self._last_chunk_time is not None and (
                self._stop_since is None or self._last_chunk_time > self._stop_since
            )
            if not fresh:
                why = EXHAUSTED if self._exhausted else "waiting for a fresh chunk"
                return self._brake(now, None, (why,))
            if self._resync:  # after a fault: to the measurement, at rest, before any motion
                gliding = self._resync_step(now)
                if gliding is not None:
                    return gliding
            q, v, a = self._filter_state()
            self.scheduler.rebase(now, q, v, a)
            self._stop_since = None
            self._exhausted = False
            self._state = RUNNING

        t_cmd = now + self.period  # the filter's returned state is for the end of this tick
        ref = self.scheduler.reference(t_cmd)
        if ref is None:
            return self._brake(now, None, ("no reference",))
        if ref.stopped:
            self._exhausted = ref.reason == EXHAUSTED
            return self._brake(now, None, (ref.reason,))
        if self._mpc_steps:
            future = self.scheduler.sample(now + self._mpc_offsets)  # first row: t_cmd
            result = self.safety.step(ref.q, ref.v, ref.a, future_ref=future)
        else:
            result = self.safety.step(ref.q, ref.v, ref.a)
        self._tracking = True
        if result.status != "ok":
            self._fallbacks += 1
            reasons: tuple[str, ...] = (f"safety filter: {result.reason or result.status}",)
        elif result.reason.startswith("recovering"):  # moving out of a barrier's margin
            reasons = ("safety filter " + result.reason.split(";")[0],)
        else:
            reasons = (ref.reason,) if ref.reason else ()
        if reasons != self._reasons:
            self._reasons = reasons
        return result
