"""Keep CPython's cyclic garbage collector from stopping the control loop.

A full (generation 2) collection walks every tracked object while holding the GIL; in the node's
process (rclpy, numpy, scipy, pinocchio, the model's config) that is tens of thousands of objects
and 20+ ms, measured, during which no other thread, the control loop included, runs Python: a
collection triggered in any thread costs the loop several ticks. Everything allocated up to
activation lives as long as the node, so it is collected once and then frozen (`gc.freeze`: moved
to a permanent generation the collector no longer walks); later collections only see the few
objects made since, and take microseconds.

`GcMonitor` times every collection through `gc.callbacks` (a few microseconds each) so the
longest pause is visible on /diagnostics.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any


def freeze_heap() -> dict[str, float]:
    """Collect everything once, then freeze the survivors; returns what that took."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    return {"collect_ms": (time.perf_counter() - t0) * 1e3, "frozen": gc.get_freeze_count()}


class GcMonitor:
    """Counts collections and keeps the longest pause per generation (install / uninstall)."""

    def __init__(self) -> None:
        self._start: dict[int, float] = {}
        self._lock = threading.Lock()
        self.count = [0, 0, 0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.frozen = 0  # objects frozen by the last freeze_heap() the owner reported
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        gen = int(info.get("generation", 0))
        if phase == "start":
            self._start[threading.get_ident()] = time.perf_counter()
            return
        t0 = self._start.pop(threading.get_ident(), None)
        if t0 is None or not 0 <= gen <= 2:
            return
        ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self.count[gen] += 1
            if ms > self.max_ms[gen]:
                self.max_ms[gen] = ms

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def reset(self) -> None:
        with self._lock:
            self.count = [0, 0, 0]
            self.max_ms = [0.0, 0.0, 0.0]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            # (gc.get_freeze_count() walks the whole frozen list under the GIL: not called here)
            return {"collections": list(self.count),
                    "max_pause_ms": [round(x, 3) for x in self.max_ms],
                    "frozen": self.frozen}
