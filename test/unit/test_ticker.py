"""control/ticker.run_ticker on a scripted clock: which deadlines it reports missed, and when."""

from __future__ import annotations

import threading

from diffusion_controller.control.ticker import run_ticker

P = 0.01


def test_a_late_start_is_reported_before_its_tick_and_an_overrun_after() -> None:
    """The OS wakes the ticker 3.5 periods late before the third tick: the three skipped
    deadlines are reported before that tick (so the tick can follow them first), and it runs
    for the newest deadline passed; the fifth tick overruns by 2.5 periods: reported after it.
    Every deadline is either ticked or reported, never both."""
    clock = {"t": 100.0, "sleeps": 0}
    events: list[tuple[str, int]] = []
    stop = threading.Event()

    def now() -> float:
        return clock["t"]

    def sleep(deadline: float, spin: float) -> None:
        clock["sleeps"] += 1
        clock["t"] = max(clock["t"], deadline) + (3.5 * P if clock["sleeps"] == 3 else 0.0)

    def tick(began: float) -> None:
        events.append(("tick", int((began - 100.0) / P + 1e-6)))  # the deadline it stands for
        if len(events) - sum(e[0] == "missed" for e in events) == 5:
            clock["t"] += 2.5 * P
        if sum(e[0] == "tick" for e in events) == 8:
            stop.set()

    def missed(count: int, began: float, deadline: float, at: float) -> None:
        events.append(("missed", count))

    run_ticker(P, 0.0, stop, tick, lambda b, d: None, missed, clock=now, sleep=sleep)
    assert events == [("tick", 0), ("tick", 1), ("missed", 3), ("tick", 5), ("tick", 6),
                      ("tick", 7), ("missed", 2), ("tick", 10), ("tick", 11), ("tick", 12)]
