"""Progress of long commands (train, record, eval, export), on a terminal and in a log.

On a terminal a tqdm bar (when tqdm is installed) redraws in place. Anywhere else (a pipe, nohup,
a container log, CI) a redrawn bar prints nothing useful until the run ends, so this writes one
plain line at least every `every_s` seconds and each time another `every_frac` of the work is
done, plus a last one at the end:

    train diffusion: 1200/5000 step (24%), 35.2 step/s, loss 0.0213, elapsed 0:00:34, ETA 0:01:48

`quiet` silences both. The clock is injectable so the line logic is tested without waiting; a
single call that runs long (a TensorRT build) keeps the log alive through `working()`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

EVERY_S = 30.0
EVERY_FRAC = 0.05


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_line(desc: str, done: int, total: int | None, unit: str, elapsed: float,
                fields: Mapping[str, Any] | None = None, initial: int = 0) -> str:
    """The non-terminal progress line: count (and share), rate, the caller's fields (loss,
    outcome...), elapsed and ETA. The rate counts only work done in this run (`initial`: where
    a resumed run started), so a resume does not inflate it."""
    parts = [f"{done}/{total} {unit}" + (f" ({100.0 * done / total:.0f}%)" if total else "")
             if total is not None else f"{done} {unit}"]
    ran = done - initial
    rate = ran / elapsed if elapsed > 0 and ran > 0 else math.nan
    parts.append(f"{rate:.3g} {unit}/s" if math.isfinite(rate) else f"- {unit}/s")
    parts += [f"{k} {_value(v)}" for k, v in (fields or {}).items()]
    parts.append(f"elapsed {_hms(elapsed)}")
    if total is not None:
        eta = (total - done) / rate if math.isfinite(rate) and rate > 0 else math.nan
        parts.append(f"ETA {_hms(eta) if done < total else '0:00:00'}")
    return f"{desc}: " + ", ".join(parts)


class Progress:
    """One long job's progress: `update(n, **fields)` as work completes, `close()` at the end."""

    def __init__(self, desc: str, total: int | None, unit: str = "step", *, initial: int = 0,
                 quiet: bool = False, stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, every_s: float = EVERY_S,
                 every_frac: float = EVERY_FRAC) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.done = self.initial = int(initial)
        self.fields: dict[str, Any] = {}
        self.quiet = bool(quiet)
        self.stream = stream if stream is not None else sys.stderr
        self.clock, self.every_s, self.every_frac = clock, float(every_s), float(every_frac)
        self.t0 = self._last_t = clock()
        self._last_frac = self._frac()
        self._lock = threading.Lock()
        self._closed = False
        if tty is None:
            tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None if self.quiet or not tty else self._make_bar()

    def _make_bar(self) -> Any:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None  # no tqdm (a deployment install): plain lines on the terminal too
        return tqdm(total=self.total, initial=self.initial, desc=self.desc, unit=self.unit,
                    dynamic_ncols=True, file=self.stream)

    def _frac(self) -> float:
        return self.done / self.total if self.total else 0.0

    def line(self) -> str:
        return format_line(self.desc, self.done, self.total, self.unit,
                           self.clock() - self.t0, self.fields, self.initial)

    def _emit(self, now: float) -> None:
        self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._last_t, self._last_frac = now, self._frac()

    def update(self, n: int = 1, **fields: Any) -> None:
        """`n` more units done; `fields` (loss=..., outcome=...) show from now on."""
        with self._lock:
            self.done += int(n)
            self.fields.update(fields)
            if self.quiet or self._closed:
                return
            if self._bar is not None:
                if fields:
                    self._bar.set_postfix({k: _value(v) for k, v in self.fields.items()},
                                          refresh=False)
                self._bar.update(int(n))
                return
            now = self.clock()
            if (now - self._last_t >= self.every_s
                    or self._frac() - self._last_frac >= self.every_frac - 1e-12):
                self._emit(now)

    def note(self, **fields: Any) -> None:
        """Change the shown fields without counting work (e.g. the current phase)."""
        self.update(0, **fields)

    def beat(self) -> None:
        """A line now if `every_s` passed since the last one (for long single calls)."""
        with self._lock:
            if self.quiet or self._closed or self._bar is not None:
                return
            now = self.clock()
            if now - self._last_t >= self.every_s:
                self._emit(now)

    @contextlib.contextmanager
    def working(self, **fields: Any) -> Iterator[None]:
        """Run a block that reports nothing itself (one ONNX export, one engine build) while a
        background thread keeps the log alive with a line at least every `every_s` seconds."""
        self.note(**fields)
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(min(self.every_s, 5.0)):
                self.beat()

        thread = threading.Thread(target=run, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        """The last line (or the bar's end); further updates are counted but not shown."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.quiet:
                return
            if self._bar is not None:
                self._bar.close()
            elif self.done != self.initial or self.total == 0:
                self._emit(self.clock())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
