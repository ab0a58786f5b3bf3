"""The canary as a real process: pinned, on absolute deadlines, its stalls recorded; and the
harness's PlatformWatch around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from diffusion_controller.reliability.canary import PlatformWatch


def test_canary_process_writes_its_wakeups(tmp_path) -> None:
    out = tmp_path / "c.json"
    cpu = min(os.sched_getaffinity(0))
    subprocess.run([sys.executable, "-m", "diffusion_controller.reliability.canary", "--cpu",
                    str(cpu), "--duration", "0.5", "--out", str(out)], check=True, timeout=60)
    r = json.loads(out.read_text())
    assert r["granted"]["cpu"] == cpu
    assert 1 <= r["wakeups"] <= 500  # 1 ms period: a stall swallows deadlines, never adds
    assert r["end"] - r["start"] >= 0.5
    for deadline, late in r["stalls"]:
        assert r["start"] <= deadline <= r["end"] and late > r["threshold_ms"]
    if not r["granted"]["sched_fifo"]:
        assert any("SCHED_FIFO" in e for e in r["granted"]["errors"])


def test_platform_watch_one_canary_per_cpu(tmp_path) -> None:
    watch = PlatformWatch(30.0, tmp_path, sample_s=0.05)  # returns once every canary is up
    time.sleep(0.2)
    t0 = time.monotonic()
    canaries = watch.stop()
    assert time.monotonic() - t0 < 10.0  # stopped by a signal, not by their 90 s cap
    assert len(canaries) == len(os.sched_getaffinity(0))
    assert all("error" not in c and c["wakeups"] > 0 for c in canaries)
    assert len(watch.steal) >= 3 and watch.steal[0][0] < watch.steal[-1][0]


def test_platform_report_attributes_the_loops_overruns(tmp_path) -> None:
    from diffusion_controller.reliability.canary import platform_report
    from diffusion_controller.ros.diagnostics import format_overruns

    watch = PlatformWatch(30.0, tmp_path, sample_s=0.05)
    time.sleep(0.3)
    now = time.monotonic()
    loop = {"recent_overruns": format_overruns([{"t_mono": now - 0.1, "missed": 1,
                                                 "start_late_ms": 12.0, "tick_ms": 1.0}])}
    report = platform_report(watch, loop)
    assert report["overruns"] == 1 and len(report["overrun_attribution"]) == 1
    row = report["overrun_attribution"][0]
    assert row["missed"] == 1 and row["stolen_s"] is not None  # steal sampled around it
    raw = report["platform_raw"]
    assert len(raw["canaries"]) == len(os.sched_getaffinity(0)) and len(raw["steal"]) >= 2
    assert platform_report(None, loop) == {}
