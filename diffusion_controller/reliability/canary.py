"""Platform stalls, measured beside the node: one canary process per CPU, and who missed what.

A missed control tick has two kinds of cause: the node's own (the GIL, a slow solve, a page
fault) and the platform's (the kernel, or on a virtual machine the hypervisor descheduling a
vCPU). Only the first can be fixed in the node. A canary tells them apart: a bare single-threaded
process pinned to one CPU, at a real-time priority above the loop's (nothing in user space can
hold it up; it costs the loop a few microseconds now and then), waking every millisecond on
absolute deadlines and recording every wake-up later than a threshold. When the
loop misses a deadline and a canary on some CPU was stalled over the same interval, the machine
was not running anything there; when no canary was, the node has to look at itself.

All times are CLOCK_MONOTONIC (`time.monotonic()`), which every process on the machine shares, so
canary stalls, the loop's overruns (`recent_overruns` on /diagnostics) and the harness's own
samples of the hypervisor's stolen time (/proc/stat) line up directly.

Run one canary: `python -m diffusion_controller.reliability.canary --cpu 0 --duration 60
--out c0.json`. Harnesses use `PlatformWatch`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffusion_controller.control.ticker import sleep_until

STALL_MS = 1.0  # a platform stall: a canary woke at least this late


def run_canary(duration_s: float, period_s: float = 1e-3, cpu: int | None = None,
               priority: int | None = 90, threshold_ms: float = 0.5,
               stop: threading.Event | None = None) -> dict[str, Any]:
    """Wake every `period_s` for `duration_s` (or until `stop` is set) on absolute deadlines
    (plain sleep, no spin: the lateness is the kernel's wake-up latency plus any time the CPU
    was not ours) and return the wake-ups later than `threshold_ms` as [deadline (monotonic s),
    late (ms)], with counts. Pinned to `cpu` and SCHED_FIFO `priority` where the OS permits
    (what was granted is in the result)."""
    granted: dict[str, Any] = {"cpu": cpu, "sched_fifo": False, "errors": []}
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except (AttributeError, OSError, ValueError) as exc:
            granted["errors"].append(f"affinity {cpu}: {exc}")
    if priority is not None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
            granted["sched_fifo"] = True
        except (AttributeError, OSError, ValueError) as exc:
            granted["errors"].append(f"SCHED_FIFO {priority}: {exc}")
    stalls: list[list[float]] = []
    threshold = threshold_ms * 1e-3
    worst = 0.0
    n = 0
    start = time.monotonic()
    # Deadline k is start + k * period, computed from the integer k: summing the period into a
    # float drifts by an ulp per step and once gave a wake-up more than duration / period.
    total = max(1, round(duration_s / period_s))
    k = 0
    while k < total and not (stop is not None and stop.is_set()):
        k += 1
        deadline = start + k * period_s
        sleep_until(deadline)
        late = time.monotonic() - deadline
        n += 1
        if late > threshold:
            stalls.append([round(deadline, 6), round(late * 1e3, 3)])
            worst = max(worst, late)
            # skip the deadlines the stall swallowed (one record per stall, not one per ms)
            k += int(late / period_s)
    return {"granted": granted, "period_s": period_s, "threshold_ms": threshold_ms,
            "wakeups": n, "start": start, "end": time.monotonic(),
            "max_late_ms": round(worst * 1e3, 3), "stalls": stalls}


def stolen_per_cpu() -> dict[int, float]:
    """Seconds the hypervisor has taken from each CPU so far (the `steal` column of /proc/stat;
    0 on bare metal, empty where there is no /proc/stat)."""
    out: dict[int, float] = {}
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = fh.readlines()
    except OSError:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for line in lines:
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0] != "cpu" and len(parts) > 8:
            try:
                out[int(parts[0][3:])] = int(parts[8]) / tick
            except ValueError:
                continue
    return out


def attribute(
    overruns: Sequence[Mapping[str, float]],
    canaries: Sequence[Mapping[str, Any]],
    steal: Sequence[tuple[float, Mapping[int, float]]] = (),
    slack_s: float = 0.002,
) -> list[dict[str, Any]]:
    """For each of the loop's missed deadlines, what the platform was doing then.

    An overrun (`t_mono`: when the late tick began, `start_late_ms`, `tick_ms`) covers the
    interval from its deadline to the end of that tick. A canary stall (deadline, late) covers
    [deadline, deadline + late]. Reported per overrun: the longest overlapping canary stall and
    its CPU, and the stolen time (all CPUs) between the harness's steal samples around it.
    `platform` is True when a canary on some CPU was stalled for at least STALL_MS inside it.
    """
    rows = []
    for o in overruns:
        began = float(o["t_mono"])
        lo = began - float(o.get("start_late_ms", 0.0)) * 1e-3 - slack_s
        hi = began + float(o.get("tick_ms", 0.0)) * 1e-3 + slack_s
        best_ms, best_cpu = 0.0, None
        for c in canaries:
            for deadline, late_ms in c.get("stalls", []):
                if deadline <= hi and deadline + late_ms * 1e-3 >= lo and late_ms > best_ms:
                    best_ms, best_cpu = float(late_ms), c.get("granted", {}).get("cpu")
        stolen = None
        before = [s for s in steal if s[0] <= lo]
        after = [s for s in steal if s[0] >= hi]
        if before and after:
            a, b = before[-1][1], after[0][1]
            stolen = round(sum(b.get(k, 0.0) - a.get(k, 0.0) for k in b), 3)
            window = round(after[0][0] - before[-1][0], 3)
        else:
            window = None
        rows.append({
            "t_mono": round(began, 4),
            "missed": int(o.get("missed", 0)),
            "start_late_ms": round(float(o.get("start_late_ms", 0.0)), 3),
            "tick_ms": round(float(o.get("tick_ms", 0.0)), 3),
            "filter_ms": round(float(o.get("filter_ms", math.nan)), 3),
            "output_ms": round(float(o.get("output_ms", math.nan)), 3),
            "cpu_ms": round(float(o.get("cpu_ms", math.nan)), 3),
            "canary_stall_ms": round(best_ms, 3),
            "canary_cpu": best_cpu,
            "stolen_s": stolen,
            "steal_window_s": window,
            "platform": best_ms >= STALL_MS,
        })
    return rows


class PlatformWatch:
    """Canary processes on every CPU this process may use, plus /proc/stat steal samples every
    `sample_s` from a thread of the harness, until `stop()` (which returns what they saw); the
    canaries end by themselves a little after `duration_s` should the harness die."""

    def __init__(self, duration_s: float, workdir: Path, sample_s: float = 0.1,
                 priority: int | None = 90) -> None:
        self.workdir = Path(workdir)
        self.sample_s = sample_s
        self.steal: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:
            cpus = [0]
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        for cpu in cpus:
            out = self.workdir / f"canary_cpu{cpu}.json"
            argv = [sys.executable, "-m", "diffusion_controller.reliability.canary",
                    "--cpu", str(cpu), "--duration", f"{duration_s + 60.0:.1f}", "--out", str(out)]
            if priority is None:
                argv.append("--no-realtime")
            else:
                argv += ["--priority", str(priority)]
            self._procs.append((subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE), out))
        for proc, _ in self._procs:  # each says "ready" once its signal handlers are in place
            ready = proc.stdout.readline() if proc.stdout is not None else b""
            if not ready.startswith(b"ready"):
                break  # it failed to start: stop() reports why
        self._thread = threading.Thread(target=self._sample, name="steal-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.steal.append((time.monotonic(), stolen_per_cpu()))
            self._stop.wait(self.sample_s)

    def stop(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Stop sampling, wait for the canaries, and return their results (an `error` entry
        for a canary that failed)."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.steal.append((time.monotonic(), stolen_per_cpu()))
        results = []
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the canary writes what it saw, then exits
        for proc, out in self._procs:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            try:
                results.append(json.loads(out.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                results.append({"error": (err or b"").decode(errors="replace")[-500:],
                                "stalls": []})
        return results


def summary(rows: Sequence[Mapping[str, Any]], canaries: Sequence[Mapping[str, Any]]
            ) -> dict[str, Any]:
    """Figures for a report: overruns, how many coincide with a platform stall, the canaries'
    worst stall and their count of stalls of STALL_MS or more."""
    return {
        "overruns": len(rows),
        "overruns_with_platform_stall": sum(1 for r in rows if r["platform"]),
        "canary_max_late_ms": max((float(c.get("max_late_ms", 0.0)) for c in canaries),
                                  default=0.0),
        "canary_stalls_over_1ms": sum(1 for c in canaries for _, late in c.get("stalls", [])
                                      if late >= STALL_MS),
        "canary_sched_fifo": all(c.get("granted", {}).get("sched_fifo", False)
                                 for c in canaries) if canaries else False,
    }


def platform_report(watch: PlatformWatch | None, loop_values: Mapping[str, str]
                    ) -> dict[str, Any]:
    """Stop `watch` and attribute the loop's `recent_overruns` (its /diagnostics values): the
    summary figures, plus `overrun_attribution` (one row per overrun) and `platform_raw` (the
    canaries' stalls and the steal samples) for the JSON."""
    from diffusion_controller.control.loop_stats import parse_overruns

    if watch is None:
        return {}
    canaries = watch.stop()
    rows = attribute(parse_overruns(loop_values.get("recent_overruns", "")), canaries,
                     watch.steal)
    # the raw records too, for a second look: each canary's stalls, and the steal samples where
    # the stolen time moved (with the one before each, so every increment keeps its window)
    steal = watch.steal
    keep = [i for i in range(len(steal))
            if i in (0, len(steal) - 1) or steal[i][1] != steal[i - 1][1]
            or steal[i][1] != steal[i + 1][1]]
    raw = {"canaries": canaries,
           "steal": [[round(steal[i][0], 3), {str(k): v for k, v in steal[i][1].items()}]
                     for i in keep]}
    return {**summary(rows, canaries), "overrun_attribution": rows, "platform_raw": raw}


def attribution_table(result: Mapping[str, Any]) -> str:
    """The missed deadlines of a bench result as a table ("" when there were none)."""
    from diffusion_controller.report import format_table

    rows = result.get("overrun_attribution") or []
    if not rows:
        return ""
    cols = ["t_mono", "missed", "start_late_ms", "tick_ms", "filter_ms", "output_ms", "cpu_ms",
            "canary_stall_ms", "canary_cpu", "stolen_s", "platform"]
    return format_table(rows, cols, title="missed deadlines and the platform at the time")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--period-ms", type=float, default=1.0)
    p.add_argument("--threshold-ms", type=float, default=0.5)
    p.add_argument("--priority", type=int, default=90, help="SCHED_FIFO priority")
    p.add_argument("--no-realtime", action="store_true", help="stay SCHED_OTHER")
    p.add_argument("--out", required=True, help="write the result here (JSON)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.period_ms <= 0:
        p.error("--duration and --period-ms must be positive")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("ready", flush=True)
    result = run_canary(args.duration, args.period_ms * 1e-3, args.cpu,
                        None if args.no_realtime else args.priority, args.threshold_ms, stop)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
