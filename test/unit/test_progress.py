"""Progress lines off a terminal: when they come (every 5 % or 30 s, driven by an injected clock,
no real waiting) and what they say (count, share, rate, fields, elapsed, ETA)."""

from __future__ import annotations

import io

from diffusion_controller.progress import Progress, format_line


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_line_format() -> None:
    line = format_line("train diffusion", 1200, 5000, "step", 34.0, {"loss": 0.021349})
    assert line == ("train diffusion: 1200/5000 step (24%), 35.3 step/s, loss 0.02135, "
                    "elapsed 0:00:34, ETA 0:01:48")
    assert format_line("eval", 0, 10, "episode", 0.0) == (
        "eval: 0/10 episode (0%), - episode/s, elapsed 0:00:00, ETA ?")
    # A resumed run: the rate counts this run's steps only.
    assert "10 step/s" in format_line("train", 600, 1000, "step", 10.0, initial=500)
    assert format_line("x", 3, None, "item", 3661.0) == (
        "x: 3 item, 0.000819 item/s, elapsed 1:01:01")


def test_every_five_percent_without_time_passing() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress("record", 100, "episode", stream=out, tty=False, clock=clock)
    for _ in range(12):
        clock.t += 0.1
        p.update(1, outcome="left")
    lines = _lines(out)
    assert len(lines) == 2  # at 5 and 10 of 100
    assert lines[0].startswith("record: 5/100 episode (5%), 10 episode/s, outcome left")
    assert lines[1].startswith("record: 10/100 episode (10%)")


def test_every_thirty_seconds_when_slow() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress("train diffusion", 10_000, stream=out, tty=False, clock=clock)
    for _ in range(3):  # 3 steps, 31 s apart: far below 5 % but past 30 s each time
        clock.t += 31.0
        p.update(1, loss=0.5)
    assert len(_lines(out)) == 3
    clock.t += 10.0
    p.update(1)
    assert len(_lines(out)) == 3  # 10 s since the last line: quiet
    p.close()
    last = _lines(out)[-1]
    assert last.startswith("train diffusion: 4/10000 step (0%)") and "elapsed 0:01:43" in last


def test_beat_for_long_single_calls_and_quiet() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress("export", 2, "graph", stream=out, tty=False, clock=clock)
    p.note(phase="denoiser engine")
    p.beat()
    assert _lines(out) == []
    clock.t += 30.0
    p.beat()
    assert _lines(out) == ["export: 0/2 graph (0%), - graph/s, phase denoiser engine, "
                           "elapsed 0:00:30, ETA ?"]
    quiet, q = io.StringIO(), Progress("x", 10, stream=io.StringIO(), tty=False, quiet=True,
                                       clock=clock)
    for _ in range(10):
        clock.t += 60.0
        q.update(1)
    q.close()
    assert quiet.getvalue() == "" and q.stream.getvalue() == ""


def test_terminal_uses_the_bar_not_lines() -> None:
    """A tty gets tqdm's bar (carriage returns), never the newline-per-update log format."""
    import pytest

    pytest.importorskip("tqdm")
    out, clock = io.StringIO(), Clock()
    with Progress("train", 50, stream=out, tty=True, clock=clock) as p:
        for _ in range(50):
            clock.t += 100.0
            p.update(1, loss=0.1)
    text = out.getvalue()
    assert "\r" in text and "train: 50/50 step" not in text
