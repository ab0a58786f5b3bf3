"""What leaves the control loop: each command (with the filter's certified continuation when a
trajectory interface asks for it), the slots a late tick missed (followed along that continuation
for a streamed trajectory, `_follow_missed`), and the status snapshot diagnostics read.

Part of ControlLoop (control/loop.py; the attributes are its own, set in its __init__). `_publish`
runs in the loop thread; `status` and the other readers run in the caller's thread and only read
references and counters the loop writes whole.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from diffusion_controller.control.loop_status import _STATUS_CODES, ESTOPPED, LoopStatus
from diffusion_controller.control.types import Chunk, Command, FilterResult

# more missed slots than this (a stalled process, a debugger) are not followed: the watchdogs
# judge such a gap, and the stream restarts
FOLLOW_MAX_MISSED = 50


class LoopOutput:
    """ControlLoop's command hand-over and status snapshot."""

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

    def _overrun(self, missed: int, began: float, deadline: float, now: float) -> None:
        """The ticker's report of a late tick (loop thread): recorded, and the slots it skipped
        are kept for `_follow_missed`."""
        self._note_missed(missed)
        self._stats.overrun(self._ticks, missed, began, deadline, now)

    def _note_missed(self, count: int) -> None:
        """The ticker let `count` control slots go by since the last tick (see _follow_missed)."""
        self._missed_slots += int(count)

    def _follow_missed(self) -> None:
        """With `follow_on_miss` (a streamed trajectory output), first thing in a tick: for each
        control slot since the last tick that the loop missed, the arm's controller ran the last
        message's certified continuation; commit those states and hand them to the output, so
        that the filter and the stream go on from what the arm did, on the slot grid, before
        this tick computes its own command. The slots are the ticker's count (on the grid of
        deadlines the stream's slots are): it reports a tick that starts late before the tick,
        an overrun after it (control/ticker.run_ticker). Counting them from the last command's
        stamp instead would misjudge them by that tick's start jitter, and a simulator's coarse
        clock alone (two periods, then none) is no missed tick: following it would brake at the
        limit for nothing. The position interface has no continuation on the arm's side, so it
        leaves this off. The gripper needs nothing here: each of its messages is one point its
        controller reaches and holds through missed slots, and its next command moves at most
        one step from that (control/gripper.py)."""
        missed, self._missed_slots = self._missed_slots, 0
        last = self._last_command
        if not self.follow_on_miss or last is None or not self._initialised:
            return
        if missed < 1 or missed > FOLLOW_MAX_MISSED:
            return
        self._follow(last, self.safety.follow_continuation(missed))

    def _follow(self, last: Command, rows: Any) -> None:
        """Hand over `rows` (q, v, a) as the commands of the slots after `last`, one period
        apart, without a plan: the states the arm's controller runs there (history only)."""
        for k, (q, v, a) in enumerate(rows, start=1):
            cmd = Command(stamp=last.stamp + k * self.period, positions=q, velocities=v,
                          accelerations=a)  # fmt: skip
            self._last_command = cmd
            self._followed += 1
            self._output(cmd)

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

