"""The real-time ticker: absolute deadlines, the one sleep-until helper, and thread scheduling.

A loop ticks at start + k * period of time.monotonic(); a missed deadline is reported and the
ticker skips to the next future one, so it never bursts. Sleeping stops `spin_s` before a
deadline and busy-waits the rest, to take the GIL back from another thread in time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def sleep_until(deadline: float, spin_s: float = 0.0,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Return at `deadline` (on `clock`): sleep until `spin_s` before it, then busy-wait."""
    while True:
        remaining = deadline - clock()
        if remaining <= 0.0:
            return
        if remaining > spin_s:
            time.sleep(remaining - spin_s)
        else:
            while clock() < deadline:
                pass
            return


def switch_interval_for(rate_hz: float, fraction: float = 1.0 / 20.0,
                        floor: float = 0.0005) -> float:
    """A `sys.setswitchinterval` value for a process hosting a loop at `rate_hz`.

    CPython hands the GIL over every switch interval (5 ms by default), so a busy inference or
    executor thread can delay a tick by that much; `fraction` of the period (default a
    twentieth), within [`floor`, 5 ms], bounds that delay at the price of more frequent
    hand-overs. Setting it is the host process's (the node's) decision, so the loop only
    suggests it; the node asks for a fiftieth with a 0.1 ms floor (0.2 ms at 100 Hz), which with
    real-time priorities on every GIL-sharing thread measured p99 tick-start error 0.06 ms
    against 0.2 ms at 0.5 ms (docs/reliability.md).
    """
    return float(min(0.005, max(float(floor), float(fraction) / float(rate_hz))))


def spin_for(rate_hz: float) -> float:
    """How long before a deadline the loop stops sleeping and busy-waits: long enough to take the
    GIL back from another thread (a switch interval or two) before the deadline, short enough to
    cost little CPU (0.5 ms at 100 Hz: 5 % of one core)."""
    return float(min(0.0005, 0.05 / float(rate_hz)))



def apply_realtime(realtime: bool, priority: int, cpus: Sequence[int] | None) -> dict[str, Any]:
    """SCHED_FIFO at `priority` and the CPU affinity for the calling thread when `realtime`;
    what was granted (and why not) for /diagnostics."""
    granted: dict[str, Any] = {"requested": realtime, "sched_fifo": False}
    errors: list[str] = []
    if realtime:
        try:
            param = os.sched_param(priority)
            os.sched_setscheduler(0, os.SCHED_FIFO, param)  # 0: this thread on Linux
            granted["sched_fifo"] = True
            granted["priority"] = priority
        except (AttributeError, OSError) as exc:
            errors.append(f"SCHED_FIFO: {exc}")
        if cpus is not None:
            try:
                os.sched_setaffinity(0, cpus)
            except (AttributeError, OSError, ValueError) as exc:
                errors.append(f"affinity: {exc}")
    try:
        granted["affinity"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        granted["affinity"] = None
    granted["errors"] = errors
    return granted


def run_ticker(
    period: float,
    spin_s: float,
    stop: threading.Event,
    tick: Callable[[float], object],
    started: Callable[[float, float], None],
    missed: Callable[[int, float, float, float], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float, float], None] | None = None,
) -> None:
    """Call `tick(began)` on absolute deadlines until `stop` is set. `started(began, deadline)`
    comes before each tick; `missed(count, began, deadline, now)` reports `count` deadlines that
    went by: before a tick that starts later than its next deadline (a wake-up the OS delayed:
    the tick then stands for the newest deadline passed, and knows of the slots it skipped
    before it computes), and after a tick that overran (the ticker then resumes at the next
    future one). `clock` and `sleep(deadline, spin_s)` default to time.monotonic and
    sleep_until."""
    if sleep is None:
        sleep = lambda deadline, spin: sleep_until(deadline, spin, clock)  # noqa: E731
    start = clock()
    k = 0
    while not stop.is_set():
        deadline = start + k * period
        sleep(deadline, spin_s)
        began = clock()
        late = int((began - start) / period) - k
        if late >= 1:  # woke past the next deadline: those slots are gone already
            missed(late, began, deadline, began)
        started(began, deadline)
        tick(began)
        k += 1 + max(late, 0)
        now = clock()
        if now >= start + k * period:
            k_next = int((now - start) / period) + 1
            missed(k_next - k, began, deadline, now)
            k = k_next
