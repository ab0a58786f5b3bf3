"""How the control loop stops, holds and starts again: brakes, faults, clock jumps and resync.

Part of ControlLoop (control/loop.py; the attributes are its own, set in its __init__), run only
in the loop thread. Every stop goes through the safety filter's `brake`, so it is certified; a
brake that itself fails latches the e-stop and publishes nothing. After a fault, once at rest, the
commanded state is brought to a settled measurement (`_resync_step`: a certified glide; after an
operator's e-stop reset `_resync_to`, at once) so the next motion starts where the arm is; with a
running streamed trajectory, from what the arm's controller runs instead (`_seed_from_arm`). A
stamp clock that jumps forgets the old timeline's stamps and requires a standstill before any
motion (`_clock_jumped`).
"""

from __future__ import annotations

import time

import numpy as np

from diffusion_controller.control.interpolation import quintic, single
from diffusion_controller.control.loop_status import (
    BRAKING,
    ESTOPPED,
    HOLDING,
    INACTIVE,
    RUNNING,
    WAITING,
    JointSnapshot,
)
from diffusion_controller.control.types import FilterResult

SETTLE_SAMPLES = 3  # joint states that must agree before one becomes the commanded state
SETTLE_TOLERANCE = 2e-3  # rad: how far those may spread (encoder noise, not motion)
SETTLE_STEP = 1e-4  # rad: a gap the commanded state may close in one tick without a glide


class LoopStops:
    """ControlLoop's brake, hold, fault and resync transitions (loop thread)."""

    def _clock_jumped(self, now: float) -> None:
        """The stamp clock stepped back: forget the old timeline's stamps, brake, tell the owner."""
        delta = now - self._last_now
        self._clock_jumps += 1
        way = f"back {-delta:.3f} s" if delta < 0 else f"forward {delta:.3f} s"
        self._last_error = f"stamp clock jumped {way}: input stamps reset"
        self._rest_required = f"stamp clock jumped {way}: braking to a stop"
        self._recent_q.clear()
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


    def _settled(self, now: float) -> np.ndarray | None:
        """The measured position when the last SETTLE_SAMPLES joint states are fresh and agree
        within SETTLE_TOLERANCE (the arm is at rest where it is measured), else None: a lone
        glitch, or a measurement that lags its arm, is never made the commanded state."""
        recent = tuple(self._recent_q)
        if len(recent) < SETTLE_SAMPLES:
            return None
        if now - recent[0][0] > self.watchdogs.config.joint_state_timeout:
            return None
        qs = np.stack([q for _, q in recent])
        if float(np.max(qs.max(axis=0) - qs.min(axis=0))) > SETTLE_TOLERANCE:
            return None
        return recent[-1][1]

    def _seed_from_arm(self, now: float, snap: JointSnapshot | None, quiet: bool = False) -> bool:
        """Re-seed the commanded state from what the arm's controller runs, while the streamed
        trajectory is running (`arm_reference`), rather than from the measurement: True when done.

        The measurement lags the stream by `trajectory_lead` plus tracking; a command seeded from
        it does not continue the stream, which then starts a transition or, farther, a new run
        that Humble's controller re-plans from its own state (a reflex on a Franka while moving).
        The filter takes over the stream's newest state, so the next command continues the
        run; after the loop was `quiet` (deactivated), first the stream's own states for the
        slots since (the rest of its certified plan, then its rest) are committed and handed
        over as followed slots. A loop that published every tick has nothing between (the
        slots it missed it followed first: _follow_missed).

        Refused (False: the caller seeds from the measurement, at rest) without a running
        stream (start-up, or after the loop was quiet: the arm's controller may have been reset
        meanwhile), without a tracking tolerance, or when the measurement is farther than
        `tracking_error_limit` from what the arm's controller commanded when it was measured
        (the arm is not where the stream is)."""
        stream = self.arm_reference
        tol = self.watchdogs.config.tracking_error_limit
        if stream is None or snap is None or tol is None or not stream.running(now + self.period):
            return False
        point = stream.state_at(snap.stamp)
        rows = stream.slots(now) if quiet else []
        newest = stream.newest
        if point is None or rows is None or newest is None:
            return False
        if not float(np.max(np.abs(point.positions - snap.q))) <= tol:
            return False
        q, v, a = rows[-1] if rows else (newest.positions, newest.velocities,
                                         newest.accelerations)  # fmt: skip
        try:
            self.safety.take_over(q, v, a)
        except ValueError as exc:  # the filter cannot vouch for it: from the measurement
            self._last_error = f"re-seed from the stream refused: {exc}"
            return False
        self._last_command = newest
        self._follow(newest, rows)
        self._reseeds += 1
        return True

    def _start_from(self, now: float, snap: JointSnapshot) -> str:
        """Start-up or re-activation, from a fresh measurement: the commanded state is the
        running stream's (_seed_from_arm: re-activated before the arm's controller stopped
        running it), else the measurement; why it cannot start ('' once started)."""
        if self._seed_from_arm(now, snap, quiet=True):
            return ""
        try:
            self.safety.reset(snap.q, snap.v)
        except ValueError as exc:  # e.g. measured outside the tightened limits: never start
            return f"cannot start from the measured state: {exc}"
        return ""

    def _resync_to(self, now: float) -> bool:
        """After an operator's e-stop reset, at rest: the commanded state becomes the settled
        measurement at once (the arm may have been moved by hand while stopped), so the next
        motion starts where the arm is; within the tracking tolerance of a running stream, the
        stream's own state instead (_seed_from_arm). Otherwise it waits, holding."""
        if self._seed_from_arm(now, self._joint):
            self._resync = False
            return True
        target = self._settled(now)
        if target is None:
            return False
        try:
            self.safety.reset(target)
        except ValueError as exc:  # measured outside the limits: keep holding where commanded
            self._last_error = f"resync refused: {exc}"
            return False
        self._resync = False
        return True

    def _resync_step(self, now: float) -> FilterResult | None:
        """Motion resumes after a fault: bring the commanded state to the settled measurement,
        or, within the tracking tolerance of a running stream, go on from the stream's own state
        at once, moving or not (_seed_from_arm).

        The arm's own controller still holds the last command, so the commanded state moves there
        on a rest-to-rest quintic within half the limits, each tick certified by the filter, not
        by a step (a Franka aborts on a discontinuous command). None once the commanded state is
        the measurement (then motion may start); otherwise this tick's command.
        """
        if self._glide is None and self._seed_from_arm(now, self._joint):
            self._resync = False  # the arm is where the stream is: it goes on from there
            return None
        q, v, _ = self._filter_state()
        if self._glide is None:
            target = self._settled(now) if self._state == HOLDING else None
            if target is None:
                return self._brake(now, None, ("resync: waiting for the arm to settle",))
            gap = np.abs(target - q)
            if float(gap.max()) <= SETTLE_STEP:
                self._resync = False  # within noise of the command: nothing to move
                return None
            lim = self.safety.limits
            d = np.maximum(gap, 1e-12)
            duration = max(float(np.max(np.maximum.reduce([
                1.875 * d / (0.5 * lim.velocity),
                np.sqrt(5.7735 * d / (0.5 * lim.acceleration)),
                np.cbrt(60.0 * d / (0.5 * lim.jerk)),
            ]))), 2.0 * self.period)
            zero = np.zeros_like(q)
            self._glide = (target, single(now, duration, quintic(q, zero, zero, target, zero, zero,
                                                                 duration)))
        target, path = self._glide
        if now >= path.end and float(np.max(np.abs(target - q))) <= SETTLE_STEP \
                and float(np.max(np.abs(v))) <= self._vel_tol:
            self._glide = None
            self._resync = False
            return None
        rq, rv, ra = path.evaluate(now + self.period)
        result = self.safety.step(rq, rv, ra)
        gap = float(np.max(np.abs(target - q)))
        self._set_state(BRAKING, (f"resync: moving to the measured state ({gap:.4f} rad away)",))
        if result.status != "ok":
            self._fallbacks += 1
            self._glide = None
        return result

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
        self._glide = None  # a stop ends a resync glide; it starts anew from rest
        result = self.safety.brake(reasons[0] if reasons else "stop")
        self._brake_ticks += 1
        if state is None:
            state = HOLDING if result.status == "holding" else BRAKING
        self._set_state(state, reasons)
        return result

    def _fault_brake(self, now: float, reason: str) -> FilterResult | None:
        """Brake after an exception; if even the filter's brake fails, latch the e-stop."""
        self._stop_since = now if np.isfinite(now) else time.monotonic()
        self._glide = None
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


    def _set_state(self, state: str, reasons: tuple[str, ...]) -> None:
        self._state = state
        if reasons != self._reasons:
            self._reasons = reasons

    def _filter_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = self.safety.state
        if hasattr(state, "q"):
            return state.q, state.v, state.a
        q, v, a = state
        return q, v, a
