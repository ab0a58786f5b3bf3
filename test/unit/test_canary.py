"""Attribution of missed control ticks to platform stalls (reliability/canary.py) on synthetic
records, and the overrun log's text form on /diagnostics."""

from __future__ import annotations

import pytest

from diffusion_controller.control.loop_stats import format_overruns, parse_overruns
from diffusion_controller.reliability.canary import STALL_MS, attribute, stolen_per_cpu, summary

CANARIES = [
    {"granted": {"cpu": 0, "sched_fifo": True}, "max_late_ms": 41.0,
     "stalls": [[100.000, 41.0], [250.0, 0.7]]},
    {"granted": {"cpu": 1, "sched_fifo": True}, "max_late_ms": 0.6, "stalls": [[300.0, 0.6]]},
]
STEAL = [(99.9, {0: 1.00, 1: 2.00}), (100.1, {0: 1.04, 1: 2.00}), (300.1, {0: 1.04, 1: 2.0})]


def test_overrun_during_a_canary_stall_is_the_platforms() -> None:
    # began 40.4 ms late at 100.0404 (deadline 100.000): cpu 0's canary was out 100.000-100.041
    late = {"t_mono": 100.0404, "missed": 4, "start_late_ms": 40.4, "tick_ms": 3.0}
    # a 15 ms tick that started on time at 300.0: the canaries were fine (0.6 ms is no stall)
    long_tick = {"t_mono": 300.0, "missed": 1, "start_late_ms": 0.01, "tick_ms": 15.2}
    # and one after the harness's last steal sample
    after = {"t_mono": 400.0, "missed": 1, "start_late_ms": 10.5, "tick_ms": 1.0}
    rows = attribute([late, long_tick, after], CANARIES, STEAL)
    assert rows[0]["platform"] and rows[0]["canary_cpu"] == 0
    assert rows[0]["canary_stall_ms"] == pytest.approx(41.0)
    assert rows[0]["stolen_s"] == pytest.approx(0.04)
    assert not rows[1]["platform"] and rows[1]["canary_stall_ms"] == pytest.approx(0.6)
    assert rows[1]["stolen_s"] == 0.0 and rows[1]["steal_window_s"] == pytest.approx(200.0)
    assert rows[2]["stolen_s"] is None and not rows[2]["platform"]
    s = summary(rows, CANARIES)
    assert s["overruns"] == 3 and s["overruns_with_platform_stall"] == 1
    assert s["canary_max_late_ms"] == 41.0 and s["canary_stalls_over_1ms"] == 1
    assert s["canary_sched_fifo"] is True
    assert STALL_MS == 1.0


def test_stall_outside_the_overrun_does_not_count() -> None:
    rows = attribute([{"t_mono": 200.0, "missed": 1, "start_late_ms": 12.0, "tick_ms": 1.0}],
                     CANARIES)
    assert rows[0]["canary_stall_ms"] == 0.0 and rows[0]["platform"] is False
    assert summary([], [])["overruns"] == 0


def test_overrun_log_text_round_trip() -> None:
    extra = {"body_ms": 2.5, "filter_ms": 0.25, "output_ms": 0.5, "cpu_ms": 2.75}
    log = [{"t_mono": 12.5, "missed": 4.0, "start_late_ms": 40.4, "tick_ms": 3.0, **extra},
           {"t_mono": 13.25, "missed": 1.0, "start_late_ms": 0.005, "tick_ms": 15.2, **extra}]
    text = format_overruns(log)
    assert parse_overruns(text) == log
    assert format_overruns([]) == "" and parse_overruns("") == []
    assert parse_overruns("garbage;1:2:3;1:x:3:4:5:6:7:8") == []
    # a node of an older version sends fewer fields: those are read
    assert parse_overruns("12.5:4:40.4:3.0") == [
        {"t_mono": 12.5, "missed": 4.0, "start_late_ms": 40.4, "tick_ms": 3.0}]


def test_stolen_time_per_cpu_reads_proc_stat() -> None:
    steal = stolen_per_cpu()
    assert steal and all(v >= 0.0 for v in steal.values())
