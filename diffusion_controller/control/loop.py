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
from diffusion_controller.control.loop_stats import OVERRUN_LOG, Histogram, LoopStats  # noqa: F401
from diffusion_controller.control.loop_status import (
    _STATUS_CODES,
    BRAKING,
    ESTOPPED,
    HOLDING,
    INACTIVE,
    RUNNING,
    WAITING,
    JointSnapshot,
    LoopStatus,
)
from diffusion_controller.control.ticker import (
    apply_realtime,
    run_ticker,
    spin_for,  # noqa: F401
    switch_interval_for,  # noqa: F401
)
from diffusion_controller.control.types import Chunk, Command, FilterResult
from diffusion_controller.control.watchdogs import WatchdogConfig, Watchdogs

# OVERRUN_LOG, Histogram, spin_for, switch_interval_for, the state names, JointSnapshot and
# LoopStatus (noqa F401 above): re-exported for the loop's importers, who knew them from here.

if TYPE_CHECKING:
    from diffusion_controller.control.safety_filter import SafetyFilter

# more missed slots than this (a stalled process, a debugger) are not followed: the watchdogs
# judge such a gap, and the stream restarts
FOLLOW_MAX_MISSED = 50


class _Ticket:
    """Lets a submitter wait for the loop's verdict on its chunk without the loop waiting."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: SubmitResult | None = None

    def settle(self, result: SubmitResult) -> None:
        self.result = result
        self.event.set()


class ControlLoop:
    """Fixed-rate loop driving `output(Command)` from chunks, through the safety filter."""

    def __init__(
        self,
        safety: SafetyFilter,
        scheduler: ChunkScheduler,
        watchdogs: Watchdogs,
        output: Callable[[Command], None],
        rate_hz: float = 100.0,
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
        rate_hz = float(rate_hz)
        if not np.isfinite(rate_hz) or rate_hz <= 0.0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        filter_rate = getattr(getattr(safety, "config", None), "rate_hz", rate_hz)
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
        cfg = getattr(safety, "config", None)
        self._mpc_steps = (
            int(getattr(cfg, "horizon", 0)) if getattr(cfg, "mode", "cbf") == "mpc" else 0
        )
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
        # Re-seed the commanded state from the measurement once at rest: after a fault, when
        # motion resumes (every watchdog is fine then, so the measurement is fresh and within
        # tracking_error_limit of the command: a sensor glitch is never commanded); after an
        # e-stop reset, at once.
        self._resync = False
        self._estop_cleared = False
        # ticks of the filter's certified continuation attached to each command (0: none)
        self.plan_steps = 0
        # a streamed trajectory output: commit the continuation over missed slots (see
        # _follow_missed); the position interface has no continuation on the arm's side
        self.follow_on_miss = False
        self._followed = 0
        self._missed_slots = 0  # slots the ticker skipped since the last tick

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

    # ------------------------------------------------------------------ inputs (any thread)
    def update_joint_state(
        self, q: Sequence[float], v: Sequence[float] | None, stamp: float
    ) -> bool:
        """Offer a measured joint state (in the scheduler's joint order); False when rejected."""
        reason = ""
        try:
            qa = np.array(q, dtype=np.float64).reshape(-1)
            va = np.zeros_like(qa) if v is None else np.array(v, dtype=np.float64).reshape(-1)
            stamp = float(stamp)
        except (TypeError, ValueError) as exc:
            qa = va = np.zeros(0)
            reason = f"joint_state rejected: {exc}"
        if not reason:
            prev = self._joint
            if qa.shape != (self.joint_count,) or va.shape != (self.joint_count,):
                reason = (
                    f"joint_state rejected: {qa.size} positions / {va.size} velocities "
                    f"for {self.joint_count} joints"
                )
            elif not (np.all(np.isfinite(qa)) and np.all(np.isfinite(va))):
                reason = "joint_state rejected: non-finite position or velocity"
            elif not np.isfinite(stamp):
                reason = "joint_state rejected: non-finite stamp"
            elif prev is not None and stamp < prev.stamp:
                reason = "joint_state rejected: stamp older than the previous one"
        if reason:
            self._joint_rejects += 1
            self._last_error = reason
            return False
        qa.flags.writeable = False
        va.flags.writeable = False
        self._joint = JointSnapshot(qa, va, stamp)
        return True

    def note_image(self, stamp: float) -> None:
        """Record that a camera frame stamped `stamp` arrived (for the image watchdog)."""
        stamp = float(stamp)
        if np.isfinite(stamp):
            self._image_stamp = stamp

    def submit_chunk(self, chunk: Chunk, wait: float | None = None) -> SubmitResult:
        """Hand a chunk to the loop; malformed ones are rejected here, in the caller's thread.

        The loop picks the chunk up at the start of its next tick. Without `wait` the result says
        "queued"; with `wait` (seconds) it is the scheduler's verdict if the loop gives one in
        time. A chunk still waiting in the mailbox when a newer one arrives is superseded.
        """
        reason = self.scheduler.check(chunk)
        seq = int(getattr(chunk, "seq", -1))
        if reason:
            result = SubmitResult(False, 0, reason, seq)
            self._rejected += 1
            self._last_submit = result
            return result
        positions = np.array(chunk.positions, dtype=np.float64)
        positions.flags.writeable = False
        own = Chunk(t0=float(chunk.t0), dt=float(chunk.dt), positions=positions, seq=seq)
        ticket = _Ticket() if wait is not None else None
        try:
            old_chunk, old_ticket = self._mailbox.popleft()
        except IndexError:
            pass
        else:
            self._superseded += 1
            if old_ticket is not None:
                old_ticket.settle(
                    SubmitResult(
                        False, 0, f"superseded by seq {seq} before the loop took it", old_chunk.seq
                    )
                )
        self._mailbox.append((own, ticket))
        if ticket is not None and ticket.event.wait(max(0.0, float(wait))):
            assert ticket.result is not None
            return ticket.result
        return SubmitResult(True, 0, "queued", seq)

    def post(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the loop thread at the start of the next tick (e.g. live filter changes)."""
        self._posted.append(fn)

    def call(self, fn: Callable[[], Any], timeout: float = 1.0) -> Any:
        """Run `fn` between two ticks and return its result (or raise its exception).

        A live change must be applied whole or not at all, and the caller must learn which: so
        it waits for the loop thread to run it (inline when the loop is not running). Raises
        TimeoutError when the loop did not reach its next tick within `timeout`; `fn` is then
        withdrawn if it has not started, so a late tick cannot apply a change that was refused.
        """
        if not self.running:
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}
        lock = threading.Lock()

        def run() -> None:
            with lock:
                if box.get("withdrawn"):
                    return
                box["started"] = True
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller, never to the tick
                box["error"] = exc
            finally:
                done.set()

        self._posted.append(run)
        if not done.wait(timeout):
            with lock:
                if not box.get("started"):
                    box["withdrawn"] = True
                    raise TimeoutError(f"the control loop did not run the change within "
                                       f"{timeout:g} s")
            done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def set_enabled(self, enabled: bool, timeout: float = 0.0) -> None:
        """Enable publishing; disabling brakes to a stop first, then goes quiet.

        `timeout` > 0 makes the enable a deadman's: it lapses (brake, then quiet) unless renewed
        by another set_enabled(True, timeout) within that many seconds. The loop thread checks
        it every tick, so a stalled executor or a dead operator console cannot keep it alive."""
        self._enable_deadline = (time.monotonic() + float(timeout) if enabled and timeout > 0
                                 else math.inf)
        self._enabled = bool(enabled)

    @property
    def enabled(self) -> bool:
        """Whether motion is enabled now (False once a deadman enable has lapsed)."""
        return self._enabled

    def estop(self) -> None:
        """Latch the e-stop: brake to a stop and hold until `reset()`."""
        self._estop = True

    def reset(self) -> tuple[bool, str]:
        """Clear the e-stop once the arm is stopped; the loop then holds until a fresh chunk."""
        cmd = self._last_command
        if cmd is not None and float(np.max(np.abs(cmd.velocities))) > self._vel_tol:
            return False, "still moving: reset refused until the arm is stopped"
        was = self._estop
        self._reset_request = True
        self._resync = True  # the arm may have been moved meanwhile: restart from the measurement
        self._estop_cleared = True  # (at once, once at rest: an operator's acknowledgement)
        self._estop = False
        return True, "e-stop cleared" if was else "nothing to reset"

    def pause(self) -> None:
        """Brake to a stop and hold; `resume()` continues with the next fresh chunk."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def set_watchdog_config(self, config: WatchdogConfig) -> None:
        """Swap the watchdog deadlines live (an atomic reference swap of an immutable config)."""
        self.watchdogs.config = config

    # ------------------------------------------------------------------ outputs (any thread)
    @property
    def state(self) -> str:
        return self._state

    def current_chunk(self) -> Chunk | None:
        """The chunk in force (for the inference planner's warm start and prefix)."""
        return self._current_chunk

    def status(self) -> LoopStatus:
        """An immutable snapshot: state, reasons, counters, last command, recent percentiles."""
        return LoopStatus(
            state=self._state,
            reasons=self._reasons,
            ticks=self._ticks,
            published=self._published,
            interventions=self._interventions,
            brake_ticks=self._brake_ticks,
            filter_fallbacks=self._fallbacks,
            exceptions=self._exceptions,
            output_errors=self._output_errors,
            chunks_accepted=self._accepted,
            chunks_rejected=self._rejected,
            chunks_superseded=self._superseded,
            joint_states_rejected=self._joint_rejects,
            last_command=self._last_command,
            last_submit=self._last_submit,
            last_error=self._last_error,
            rate_hz=self.rate_hz,
            since_last_tick_s=time.monotonic() - self._last_tick_mono,
            realtime=dict(self._realtime_granted),
            last_e2e_ms=self._last_e2e * 1e3,
            clock_jumps=self._clock_jumps,
            **self._stats.summary(_STATUS_CODES),
        )

    def reset_statistics(self) -> None:
        """Start the whole-run histograms and the run's missed-tick count afresh (any thread:
        new objects are swapped in by reference; the window rings and counters are untouched)."""
        self._stats.reset_lifetime()

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
        stats = self._stats
        run_ticker(self.period, self._spin_s, self._stop_event, self.tick, stats.started,
                   lambda missed, began, deadline, now: (
                       self._note_missed(missed),
                       stats.overrun(self._ticks, missed, began, deadline, now)))

    def _note_missed(self, count: int) -> None:
        """The ticker let `count` control slots go by after the last tick (see _follow_missed)."""
        self._missed_slots += int(count)

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

    def _follow_missed(self) -> None:
        """With `follow_on_miss` (a streamed trajectory output): for each control slot since
        the last tick that the loop missed, the arm's controller ran the last message's
        certified continuation; commit those states and hand them to the output, so that the
        filter and the stream go on from what the arm did, on the slot grid."""
        missed, self._missed_slots = self._missed_slots, 0
        last = self._last_command
        if not self.follow_on_miss or last is None or not self._initialised:
            return
        if missed < 1 or missed > FOLLOW_MAX_MISSED:
            return
        for k, (q, v, a) in enumerate(self.safety.follow_continuation(missed), start=1):
            cmd = Command(stamp=last.stamp + k * self.period, positions=q, velocities=v,
                          accelerations=a)  # fmt: skip
            self._last_command = cmd
            self._followed += 1
            self._output(cmd)

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
            try:
                self.safety.reset(snap.q, snap.v)
            except ValueError as exc:  # e.g. measured outside the tightened limits: never start
                self._set_state(WAITING, (f"cannot start from the measured state: {exc}",))
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
            self._estop_cleared = not self._resync_to(snap, now)
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
            if self._resync and self._state == HOLDING and self._resync_to(snap, now):
                pass  # after a fault: from the measurement, at rest, before any motion
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

    def _clock_jumped(self, now: float) -> None:
        """The stamp clock stepped back: forget the old timeline's stamps, brake, tell the owner."""
        delta = now - self._last_now
        self._clock_jumps += 1
        way = f"back {-delta:.3f} s" if delta < 0 else f"forward {delta:.3f} s"
        self._last_error = f"stamp clock jumped {way}: input stamps reset"
        self._rest_required = f"stamp clock jumped {way}: braking to a stop"
        snap = self._joint
        if snap is not None:  # keep the measurement, but as infinitely old until a new one comes
            self._joint = JointSnapshot(snap.q, snap.v, float("-inf"))
        self._image_stamp = None
        self._last_chunk_time = None
        self._mailbox.clear()
        self.scheduler.clear()
        self._current_chunk = None
        self._pending_e2e = None
        self._stop_since = now
        if self._state == RUNNING:
            self._state = BRAKING
        if self._on_clock_jump is not None:
            try:
                self._on_clock_jump(delta)
            except Exception as exc:  # the owner's reset must not take the loop down
                self._last_error = f"clock-jump handler failed: {type(exc).__name__}: {exc}"

    def _filter_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = self.safety.state
        if hasattr(state, "q"):
            return state.q, state.v, state.a
        q, v, a = state
        return q, v, a

    def _take_chunk(self, chunk: Chunk, ticket: _Ticket | None, now: float) -> None:
        result = self.scheduler.submit(chunk, now)
        if result.accepted:
            self._accepted += 1
            self._last_chunk_time = now
            self._current_chunk = chunk
            self._pending_e2e = float(chunk.t0)
        else:
            self._rejected += 1
        self._last_submit = result
        if ticket is not None:
            ticket.settle(result)

    def _resync_to(self, snap: Any, now: float) -> bool:
        """At rest after a fault or an e-stop reset: the commanded state becomes the measured one
        (at rest), so the next motion starts where the arm is, not where it was commanded to be.
        Only from a fresh measurement; otherwise it waits (and keeps holding)."""
        if now - snap.stamp > self.watchdogs.config.joint_state_timeout:
            return False
        try:
            self.safety.reset(snap.q)
        except ValueError as exc:  # measured outside the limits: keep holding where commanded
            self._last_error = f"resync refused: {exc}"
            return False
        self._resync = False
        return True

    def _disable_step(self, now: float) -> FilterResult | None:
        if not self._initialised or self._state in (INACTIVE, WAITING):
            self._initialised = False
            self._set_state(INACTIVE, ("disabled",))
            return None
        result = self._brake(now, None, ("disabled",))
        if result.status == "holding":
            # stopped: publish this last hold command, then go quiet until re-enabled
            self._initialised = False
            self.scheduler.clear()
            self._current_chunk = None
            self._set_state(INACTIVE, ("disabled",))
        return result

    def _brake(self, now: float, state: str | None, reasons: tuple[str, ...]) -> FilterResult:
        if self._stop_since is None:
            self._stop_since = now
        result = self.safety.brake(reasons[0] if reasons else "stop")
        self._brake_ticks += 1
        if state is None:
            state = HOLDING if result.status == "holding" else BRAKING
        self._set_state(state, reasons)
        return result

    def _fault_brake(self, now: float, reason: str) -> FilterResult | None:
        """Brake after an exception; if even the filter's brake fails, latch the e-stop."""
        self._stop_since = now if np.isfinite(now) else time.monotonic()
        try:
            result = self.safety.brake(reason)
        except Exception as exc:
            self._estop = True
            self._last_error = f"{reason}; brake failed: {type(exc).__name__}: {exc}"
            self._set_state(ESTOPPED, (reason, "safety filter brake failed: nothing published"))
            return None
        self._brake_ticks += 1
        self._set_state(BRAKING if result.status != "holding" else HOLDING, (reason,))
        return result

    def _publish(self, now: float, result: FilterResult, t_start: float) -> Command | None:
        q, v, a = result.positions, result.velocities, result.accelerations
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(v)) and np.all(np.isfinite(a))):
            # the filter promises finite output; if that ever breaks, nothing leaves the loop
            self._estop = True
            self._last_error = "safety filter returned a non-finite command: e-stop latched"
            self._set_state(ESTOPPED, (self._last_error,))
            return None
        plan = self.safety.continuation(self.plan_steps) if self.plan_steps else None
        cmd = Command(stamp=now + self.period, positions=q, velocities=v, accelerations=a,
                      plan=plan)
        self._last_command = cmd
        if result.intervened:
            self._interventions += 1
        self._stats.iterations.push(result.iterations)
        self._stats.qp_status.push(_STATUS_CODES.get(result.status, 3))
        try:
            self._output(cmd)
            self._published += 1
        except Exception as exc:
            self._output_errors += 1
            self._last_error = f"output failed: {type(exc).__name__}: {exc}"
        pending_t0 = self._pending_e2e
        if pending_t0 is not None and self._tracking:
            # stamp-clock time of the hand-over: the tick's reading plus the time spent since
            self._last_e2e = now + (time.perf_counter() - t_start) - pending_t0
            self._stats.life_e2e.add(self._last_e2e)
            self._pending_e2e = None
        return cmd

    def _set_state(self, state: str, reasons: tuple[str, ...]) -> None:
        self._state = state
        if reasons != self._reasons:
            self._reasons = reasons
