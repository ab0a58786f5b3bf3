"""Putting streams recorded at their own rates and on their own clocks onto one time grid.

Pure numpy, no ROS: the bag reader collects a `Stream` per topic and hands them here.

Clocks. A message with a header is timed by its header stamp (when it was measured); one without
(Float64MultiArray commands), or whose stamps are zero, by the bag's receive time. Each stamped
stream's clock offset is the median of (header stamp - receive time): transport delay plus the
difference between the sender's clock and the recorder's. Two streams whose offsets differ by
more than the tolerance (default 50 ms) are an error naming both topics, because aligning them
would shift actions against observations by that much. Stamps more than 1 s off the recorder in
any stream mean another clock altogether (sim time recorded against wall time); then every
stream falls back to receive times, with a warning, as before specs existed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NS = 1_000_000_000
OTHER_CLOCK_NS = 1 * NS  # beyond this, stamps are on another clock, not merely offset


class ClockMismatchError(ValueError):
    """Two streams' clocks disagree by more than the spec's tolerance."""


@dataclass
class Stream:
    """The usable messages of one topic, in recording order.

    `header` holds header stamps (0 where the message has none), `received` the bag's receive
    times, `delay` an extra offset added after the clock is chosen (a trajectory point's
    time_from_start), `values` what was kept (positions, or image ordinals).
    """

    topic: str
    has_header: bool = True
    header: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    delay: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    skipped: int = 0

    def add(self, header: int, received: int, value: Any, delay: int = 0) -> None:
        self.header.append(int(header))
        self.received.append(int(received))
        self.delay.append(int(delay))
        self.values.append(value)

    @property
    def stamped(self) -> bool:
        """Timed by header stamps: it has a header and every stamp is set."""
        return self.has_header and bool(self.header) and all(h != 0 for h in self.header)

    def offset_ns(self) -> float:
        """Median (header - receive) in ns; 0 for a stream timed by receive time."""
        if not self.stamped:
            return 0.0
        h = np.asarray(self.header, dtype=np.int64)
        r = np.asarray(self.received, dtype=np.int64)
        return float(np.median(h - r))

    def times(self, clock: str) -> np.ndarray:
        base = self.header if clock == "header" and self.stamped else self.received
        return np.asarray(base, dtype=np.int64) + np.asarray(self.delay, dtype=np.int64)


def choose_clock(streams: Sequence[Stream]) -> str:
    """'header' unless some stamped stream sits more than 1 s off the recorder's clock."""
    for s in streams:
        if s.stamped and abs(s.offset_ns()) > OTHER_CLOCK_NS:
            return "received"
    return "header"


def clock_offsets(streams: Sequence[Stream], clock: str) -> dict[str, float]:
    """Topic -> clock offset in seconds as used for alignment (0 when timed by receive time)."""
    return {s.topic: (s.offset_ns() / NS if clock == "header" else 0.0) for s in streams}


def worst_pair(offsets: Mapping[str, float]) -> tuple[str, str, float]:
    """The two topics whose offsets differ most, and by how much (s)."""
    if len(offsets) < 2:
        return ("", "", 0.0)
    ranked = sorted(offsets, key=lambda t: offsets[t])
    hi, lo = ranked[-1], ranked[0]
    return (hi, lo, offsets[hi] - offsets[lo])


def check_clocks(streams: Sequence[Stream], clock: str, tolerance_s: float, where: str) -> None:
    """Raise ClockMismatchError naming the two topics whose clocks disagree most, if too far."""
    a, b, diff = worst_pair(clock_offsets(streams, clock))
    if diff > tolerance_s:
        raise ClockMismatchError(
            f"{where}: the clocks of {a} and {b} disagree by {diff * 1e3:.1f} ms (median header "
            f"stamp minus receive time), more than the {tolerance_s * 1e3:.0f} ms tolerance; "
            "synchronise the machines' clocks (chrony/PTP), or if this is transport latency "
            "raise alignment.tolerance_s in the data spec"
        )


def sorted_series(stream: Stream, clock: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times (ns, int64) in increasing order with their values; equal times keep the newest."""
    t = stream.times(clock)
    order = np.argsort(t, kind="stable")
    t, values = t[order], values[order]
    keep = np.ones(len(t), dtype=bool)
    keep[:-1] = t[1:] != t[:-1]
    return t[keep], values[keep]


def rate_hz(t: np.ndarray) -> float:
    t = np.asarray(t, dtype=np.int64)
    return float((len(t) - 1) * NS / (t[-1] - t[0])) if len(t) > 1 and t[-1] > t[0] else 0.0


def segments(
    marker_t: np.ndarray, marker_v: Sequence[Any] | None, data_end: int
) -> list[tuple[int, int]]:
    """Episode windows [start, end) in ns from a marker topic's messages.

    With boolean markers (std_msgs/Bool) True opens an episode and False closes it; any other
    marker type opens a new episode at each message, closing the previous one. The last open
    episode ends with the data.
    """
    out: list[tuple[int, int]] = []
    open_at: int | None = None
    for k, t in enumerate(np.asarray(marker_t, dtype=np.int64)):
        flag = None if marker_v is None else marker_v[k]
        if isinstance(flag, (bool, np.bool_)) and not flag:
            if open_at is not None:
                out.append((open_at, int(t)))
            open_at = None
            continue
        if open_at is not None:
            out.append((open_at, int(t)))
        open_at = int(t)
    if open_at is not None:
        out.append((open_at, int(data_end) + 1))
    return out


def grid_between(start: int, end: int, step: int) -> np.ndarray:
    """Uniform grid start, start + step, ... <= end (int64 ns); empty when end < start."""
    if end < start:
        return np.zeros(0, dtype=np.int64)
    return start + step * np.arange((end - start) // step + 1, dtype=np.int64)


def interp(grid: np.ndarray, t: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear interpolation of every column of q [N, J] at grid times (held at the ends)."""
    t0 = t[0]
    return np.stack([np.interp(grid - t0, t - t0, q[:, k]) for k in range(q.shape[1])], axis=1)


def newest(grid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the newest sample at or before each grid time (-1 where none)."""
    return np.searchsorted(t, grid, side="right") - 1
