"""How the control loop stops, holds and starts again: brakes, faults, clock jumps and resync.

Part of ControlLoop (control/loop.py; the attributes are its own, set in its __init__), run only
in the loop thread. Every stop goes through the safety filter's `brake`, so it is certified; a
brake that itself fails latches the e-stop and publishes nothing. After a fault, once at rest, the
commanded state is re-seeded from a fresh measurement (`_resync_to`) so the next motion starts
where the arm is. A stamp clock that jumps forgets the old timeline's stamps and requires a
standstill before any motion (`_clock_jumped`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

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


class LoopStops:
    """ControlLoop's brake, hold, fault and resync transitions (loop thread)."""

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


    def _set_state(self, state: str, reasons: tuple[str, ...]) -> None:
        self._state = state
        if reasons != self._reasons:
            self._reasons = reasons
