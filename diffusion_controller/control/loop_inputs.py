"""What other threads hand the control loop, and how it takes it without ever waiting on them.

Part of ControlLoop (control/loop.py; the attributes are its own, set in its __init__): joint
states and image stamps are immutable snapshots swapped in by reference, chunks travel through a
single-slot mailbox the loop empties at the start of a tick (`_take_chunk`), functions posted by
`post` and `call` run between two ticks, and the operator's flags (enable with its deadman,
e-stop, pause, reset) are plain attribute writes the next tick reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffusion_controller.control.chunk_scheduler import SubmitResult
from diffusion_controller.control.loop_status import INACTIVE, WAITING, JointSnapshot
from diffusion_controller.control.types import Chunk
from diffusion_controller.control.watchdogs import WatchdogConfig


class _Ticket:
    """Lets a submitter wait for the loop's verdict on its chunk without the loop waiting."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: SubmitResult | None = None

    def settle(self, result: SubmitResult) -> None:
        self.result = result
        self.event.set()



class LoopInputs:
    """ControlLoop's inputs (any thread) and the tick's intake of a chunk."""

    # the loop's own attributes these methods use (set in ControlLoop.__init__)
    _joint: JointSnapshot | None
    _mailbox: Any
    _posted: Any
    joint_count: int

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
            elif stamp > self._future_bound():
                # one from an old timeline that slipped past the owner's check while the clock
                # jumped back: taken, it would make every state of the new timeline "older"
                reason = "joint_state rejected: stamp ahead of the control clock"
        if reason:
            self._joint_rejects += 1
            self._last_error = reason
            return False
        qa.flags.writeable = False
        va.flags.writeable = False
        self._joint = JointSnapshot(qa, va, stamp)
        self._recent_q.append((stamp, qa))
        return True

    def _future_bound(self) -> float:
        """The latest joint-state stamp the loop takes: its clock now, plus the watchdogs'
        stamp tolerance and two ticks (the owner read the clock a moment earlier)."""
        try:
            now = float(self._clock())
        except Exception:  # a clock that fails here fails the tick too, which brakes
            return float("inf")
        return now + self.watchdogs.config.stamp_tolerance + 2.0 * self.period

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
        # A loop that publishes nothing (inactive, waiting) commands no motion, whatever its last
        # command was (e.g. one cut short by a deactivation): refusing then would deadlock the
        # operator, since ~/enable is refused while the e-stop is latched.
        publishing = self._state not in (INACTIVE, WAITING)
        if publishing and cmd is not None and float(np.max(np.abs(cmd.velocities))) > self._vel_tol:
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

