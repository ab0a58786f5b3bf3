"""Control-loop statistics: preallocated rings over a recent window, whole-run histograms,
and the log of missed deadlines.

Kept apart from the loop so the tick only pushes numbers into preallocated storage, and the
summaries (percentiles, the overrun log) are computed on demand in the caller's thread.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OVERRUN_LOG = 64  # missed deadlines kept with their times (the last few minutes of a bad soak)


class Ring:
    """A preallocated ring buffer of one numeric series."""

    __slots__ = ("buf", "count")

    def __init__(self, size: int, dtype: Any = np.float64) -> None:
        self.buf = np.zeros(size, dtype=dtype)
        self.count = 0

    def push(self, value: float) -> None:
        self.buf[self.count % self.buf.shape[0]] = value
        self.count += 1

    def values(self) -> np.ndarray:
        n = min(self.count, self.buf.shape[0])
        return np.array(self.buf[:n])


def percentiles(values: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    if values.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    p50, p99 = np.percentile(values, [50.0, 99.0])
    return {
        "p50": float(p50) * scale,
        "p99": float(p99) * scale,
        "max": float(np.max(values)) * scale,
        "n": int(values.size),
    }


class Histogram:
    """Whole-run distribution of one non-negative series in fixed bins (preallocated, O(1) add).

    Percentiles are read at the upper edge of their bin, so they are exact to `bin_s`; values
    beyond the last bin land in it and the exact maximum is kept separately.
    """

    __slots__ = ("bin_s", "counts", "max", "n", "total")

    def __init__(self, bin_s: float, range_s: float) -> None:
        if not (bin_s > 0.0 and range_s > bin_s):
            raise ValueError("need 0 < bin_s < range_s")
        self.bin_s = float(bin_s)
        self.counts = np.zeros(int(np.ceil(range_s / bin_s)), dtype=np.int64)
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, value: float) -> None:
        if value != value:  # NaN: nothing to count
            return
        value = max(0.0, value)
        i = int(value / self.bin_s)
        last = self.counts.shape[0] - 1
        self.counts[i if i < last else last] += 1
        self.n += 1
        self.total += value
        if value > self.max:
            self.max = value

    def percentile(self, q: float) -> float:
        if self.n == 0:
            return float("nan")
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q / 100.0 * self.n, side="left"))
        return min((i + 1) * self.bin_s, self.max)

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        """p50, p99, p99.9, max and mean (times `scale`), and the count."""
        if self.n == 0:
            nan = float("nan")
            return {"p50": nan, "p99": nan, "p999": nan, "max": nan, "mean": nan, "n": 0}
        return {
            "p50": self.percentile(50.0) * scale,
            "p99": self.percentile(99.0) * scale,
            "p999": self.percentile(99.9) * scale,
            "max": self.max * scale,
            "mean": self.total / self.n * scale,
            "n": int(self.n),
        }



class LoopStats:
    """Every timing and QP series the loop records, in one place.

    The loop thread writes; `summary()` and `reset_lifetime()` may run in any thread (the
    histograms are swapped in by reference, the overrun log is copied in one C call).
    """

    def __init__(self, window: int) -> None:
        self.missed = 0
        self.tick_error = Ring(window)
        self.compute = Ring(window)
        self.iterations = Ring(window, np.int32)
        self.qp_status = Ring(window, np.int8)
        self.missed_base = 0
        self.overruns: deque[dict[str, float]] = deque(maxlen=OVERRUN_LOG)
        # where the last tick went: (body, filter, output, cpu) seconds, for an overrun's record
        self.sections = (0.0, 0.0, 0.0, 0.0)
        self.reset_lifetime(keep_missed=True)

    def reset_lifetime(self, keep_missed: bool = False) -> None:
        """Start the whole-run histograms and the run's missed-tick count afresh."""
        self.life_error = Histogram(1e-5, 0.2)  # 10 us bins up to 200 ms
        self.life_compute = Histogram(1e-5, 0.2)
        self.life_e2e = Histogram(1e-4, 5.0)  # 0.1 ms bins up to 5 s
        if not keep_missed:
            self.missed_base = self.missed

    def started(self, began: float, deadline: float) -> None:
        """A tick began at `began` for `deadline` (monotonic seconds)."""
        self.tick_error.push(began - deadline)
        self.life_error.add(began - deadline)

    def computed(self, elapsed: float) -> None:
        """A tick's compute time (seconds)."""
        self.compute.push(elapsed)
        self.life_compute.add(elapsed)

    def overrun(self, ticks: int, missed: int, began: float, deadline: float, now: float) -> None:
        """`missed` deadlines went by during tick number `ticks`; why: a late start (the GIL, the
        OS) or a long tick (the filter, the publish)."""
        self.missed += missed
        body, filt, out, cpu = self.sections
        self.overruns.append({"tick": float(ticks), "missed": float(missed),
                              "start_late_ms": (began - deadline) * 1e3,
                              "tick_ms": (now - began) * 1e3, "t_mono": began,
                              "body_ms": body * 1e3, "filter_ms": filt * 1e3,
                              "output_ms": out * 1e3, "cpu_ms": cpu * 1e3})

    def summary(self, status_codes: dict[str, int]) -> dict[str, Any]:
        """The LoopStatus fields these statistics fill."""
        iters = self.iterations.values()
        codes = self.qp_status.values()
        names = {v: k for k, v in status_codes.items()}
        qp_status = {names.get(c, "other"): int(np.count_nonzero(codes == c)) for c in (0, 1, 2)}
        overruns = list(self.overruns)  # one C call: atomic against the loop's append
        return {
            "missed_ticks": self.missed,
            "window": int(self.compute.buf.shape[0]),
            "tick_error_ms": percentiles(self.tick_error.values(), 1e3),
            "compute_ms": percentiles(self.compute.values(), 1e3),
            "qp_iterations": {
                "p50": float(np.median(iters)) if iters.size else float("nan"),
                "max": float(np.max(iters)) if iters.size else float("nan"),
            },
            "qp_status": qp_status,
            "lifetime": {
                "tick_error_ms": self.life_error.summary(1e3),
                "compute_ms": self.life_compute.summary(1e3),
                "e2e_ms": self.life_e2e.summary(1e3),
            },
            "run_missed": self.missed - self.missed_base,
            "last_overrun": dict(overruns[-1]) if overruns else {},
            "recent_overruns": [dict(o) for o in overruns],
        }


_OVERRUN_FIELDS = ("t_mono", "missed", "start_late_ms", "tick_ms", "body_ms", "filter_ms",
                   "output_ms", "cpu_ms")


def format_overruns(overruns: Sequence[Mapping[str, float]]) -> str:
    """Missed deadlines, `;`-joined `t_mono:missed:start_late_ms:tick_ms:body_ms:filter_ms:
    output_ms:cpu_ms` (t_mono: CLOCK_MONOTONIC seconds, shared by every process on the machine,
    so a harness can line them up with its own measurements); see `parse_overruns`."""
    return ";".join(":".join(f"{float(o.get(k, math.nan)):.4f}" for k in _OVERRUN_FIELDS)
                    for o in overruns)


def parse_overruns(text: str) -> list[dict[str, float]]:
    """The inverse of `format_overruns`. Entries from a node with fewer fields (an older
    version: at least t_mono, missed, start_late_ms, tick_ms) give those; malformed ones are
    skipped."""
    out = []
    for item in text.split(";"):
        parts = item.split(":")
        if not 4 <= len(parts) <= len(_OVERRUN_FIELDS):
            continue
        try:
            out.append({k: float(x) for k, x in zip(_OVERRUN_FIELDS, parts, strict=False)})
        except ValueError:
            continue
    return out
