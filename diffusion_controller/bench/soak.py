"""`diffusion-controller bench soak`: a long closed-loop run in the simulator; memory and ticks.

The real `sim_arm` (PyBullet, camera, /robot_description) and the real controller node run as
processes of their own; the controller drives the simulated arm with the model (inference in its
own process by default) for `--duration` seconds (default 1800, i.e. 30 min), and the simulator is
reset to a new task every `--reset-every` seconds so episodes repeat as in use. Every `--sample`
seconds the resident memory (RSS) of the node process and of its inference process, and the loop's
missed ticks, are recorded.

Reported: RSS growth of the node from the end of the warm-up to the end of the run (goal: under
5 %), its slope per hour, the same for the inference process, missed ticks over the run (goal: 0),
whole-run tick-start error percentiles, and the samples themselves (--json). Not part of CI: start
it when the machine is quiet, and record the load average it ran under (it is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.bench.loop import (
    add_node_arguments,
    load_average,
    node_params,
    prepare_model,
    start_measuring,
    supervise,
    use_private_domain,
)
from diffusion_controller.reliability.canary import attribution_table
from diffusion_controller.report import format_table, write_json
from diffusion_controller.service_client import ServiceUnavailableError, call_service


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="long closed-loop sim run: node memory growth, missed ticks")
    add_node_arguments(p)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds before the reference memory sample (default 60)")
    p.add_argument("--sample", type=float, default=10.0, help="sampling period (s)")
    p.add_argument("--reset-every", type=float, default=60.0,
                   help="reset the sim to a new task this often (s; 0: never)")
    p.add_argument("--json", help="write the result and the samples to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.reliability import harness as h

    if args.duration <= 0 or args.sample <= 0:
        raise SystemExit("--duration and --sample must be positive")
    domain = use_private_domain(args)
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp:
        workdir = Path(tmp)
        model, cache = prepare_model(args, workdir)
        feeder = h.Feeder(play_arm=False)
        sim = h.start_sim(workdir, {"seed": 1, "image_width": 96, "image_height": 96})
        params = node_params(args, model, cache, urdf=None)
        params["urdf_path"] = ""
        node = h.start_controller(params, workdir)
        result, code = supervise(feeder, node, sim,
                                 lambda: soak(args, feeder, node, sim, workdir))
        result["node_exit_code"] = code
        result["ros_domain_id"] = domain
    samples = result.pop("samples", [])
    rows = [{"metric": k, "value": v} for k, v in result.items() if not isinstance(v, (list, dict))]
    print(format_table(rows, ["metric", "value"], title="bench soak"))
    table = attribution_table(result)
    if table:
        print(table)
    if args.json:
        write_json(args.json, {**result, "samples": samples})
    return 0 if code == 0 else 1


def _reset_sim(feeder: Any, seed: int) -> None:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    # a sim that is not there (an external one) keeps its own seed and pose
    node = feeder.node
    req = SetParameters.Request(parameters=[Parameter("seed", value=seed).to_parameter_msg()])
    with contextlib.suppress(ServiceUnavailableError):
        call_service(node, SetParameters, "/sim_arm/set_parameters", req, 5.0,
                     discovery_timeout=2.0)
    with contextlib.suppress(ServiceUnavailableError):
        call_service(node, Trigger, "/sim_arm/reset", Trigger.Request(), 10.0,
                     discovery_timeout=2.0)


def soak(args: argparse.Namespace, feeder: Any, node: Any, sim: Any, workdir: Path
         ) -> dict[str, Any]:
    from diffusion_controller.reliability.canary import PlatformWatch, platform_report
    from diffusion_controller.reliability.harness import diag_float, diag_realtime, stolen_s

    start_measuring(feeder, node, 240.0, "the controller to drive the sim")
    watch = None if args.no_canary else PlatformWatch(args.duration, workdir)
    t0 = time.monotonic()
    load0 = load_average()
    faults0, steal0 = node.major_faults(), stolen_s()
    samples: list[dict[str, Any]] = []
    next_sample = t0
    next_reset = t0 + args.reset_every if args.reset_every > 0 else float("inf")
    seed = 1
    while True:
        now = time.monotonic()
        if now - t0 >= args.duration:
            break
        if now >= next_reset:
            seed += 1
            _reset_sim(feeder, seed)
            next_reset += args.reset_every
        if now >= next_sample:
            _, loop = feeder.entry("control loop")
            _, inf = feeder.entry("inference")
            pid = diag_float(inf, "process_pid")  # NaN with inference in a thread
            child = int(pid) if math.isfinite(pid) else 0
            samples.append({
                "t_s": round(now - t0, 1),
                "node_rss_mb": round(node.rss_mb(), 2),
                "inference_rss_mb": round(node.rss_mb(child), 2) if child > 0 else None,
                "missed": int(diag_float(loop, "run_missed_ticks")),
                "state": feeder.entry("control loop")[0],
                "tick_error_max_ms": diag_float(loop, "run_tick_error_max_ms"),
            })
            if len(samples) % max(1, int(60 / args.sample)) == 0:
                s = samples[-1]
                print(f"  {s['t_s']:7.0f} s: node RSS {s['node_rss_mb']} MB, inference RSS "
                      f"{s['inference_rss_mb']} MB, missed {s['missed']}, {s['state']}",
                      flush=True)
            next_sample += args.sample
        if not node.alive or sim.proc.poll() is not None:
            raise RuntimeError("a process exited during the soak:\n" + node.log()[-3000:])
        time.sleep(0.2)
    t1 = time.monotonic()
    faults1, steal1 = node.major_faults(), stolen_s()
    feeder.wait_diag_after(t1 + 0.05, timeout=10.0)
    _, loop = feeder.entry("control loop")
    _, nodev = feeder.entry(": node")
    platform = platform_report(watch, loop)
    ref = [s for s in samples if s["t_s"] >= min(args.warmup, 0.5 * args.duration)]
    ref = ref or samples
    t = np.array([s["t_s"] for s in ref])

    def growth(key: str) -> tuple[float | None, float | None]:
        vals = np.array([s[key] for s in ref if s[key] is not None], dtype=float)
        if vals.size < 2:
            return None, None
        pct = 100.0 * (vals[-1] - vals[0]) / vals[0]
        slope = float(np.polyfit(t[: vals.size], vals, 1)[0] * 3600.0)
        return round(pct, 2), round(slope, 2)

    node_pct, node_slope = growth("node_rss_mb")
    inf_pct, inf_slope = growth("inference_rss_mb")
    return {
        "duration_s": round(t1 - t0, 1),
        "rate_hz": float(args.rate),
        "ticks": int(diag_float(loop, "run_tick_error_n")),
        "missed": int(diag_float(loop, "run_missed_ticks")),
        "p50_err_ms": diag_float(loop, "run_tick_error_p50_ms"),
        "p99_err_ms": diag_float(loop, "run_tick_error_p99_ms"),
        "max_err_ms": diag_float(loop, "run_tick_error_max_ms"),
        "last_overrun": loop.get("last_overrun", ""),
        "e2e_p50_ms": diag_float(loop, "run_e2e_p50_ms"),
        "e2e_p99_ms": diag_float(loop, "run_e2e_p99_ms"),
        "node_rss_mb_ref": ref[0]["node_rss_mb"] if ref else None,
        "node_rss_mb_end": samples[-1]["node_rss_mb"] if samples else None,
        "node_rss_growth_pct": node_pct,
        "node_rss_slope_mb_per_h": node_slope,
        "inference_rss_mb_end": samples[-1]["inference_rss_mb"] if samples else None,
        "inference_rss_growth_pct": inf_pct,
        "inference_rss_slope_mb_per_h": inf_slope,
        "reference_after_s": ref[0]["t_s"] if ref else None,
        "sim_resets": seed - 1,
        "node_major_faults": faults1 - faults0,
        "vm_stolen_s": round(steal1 - steal0, 2),
        "gc_max_pause_ms": nodev.get("gc_max_pause_ms", ""),
        "sched_fifo": bool(diag_realtime(loop).get("sched_fifo", False)),
        "inference_mode": args.inference_mode,
        "backend": args.backend,
        "load_avg_start": load0,
        "load_avg_end": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **platform,
        "samples": samples,
    }
