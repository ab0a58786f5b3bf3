"""`diffusion-controller bench loop`: the real node's 100 Hz loop while inference runs.

The controller node is started as its own process (`--ros-args --params-file`), with the model on
a CPU backend and inference running continuously at its configured rate, and fed over DDS either
by a publisher playing the arm and a camera (default: 640x480 bgr8 at 30 Hz, joint states at
100 Hz, a perfect position tracker) or by the real `sim_arm` (`--source sim`). After a warm-up the
node's whole-run statistics are restarted (~/reset_statistics) and, after `--duration` seconds,
read from /diagnostics:

- tick-start error: how late each tick began after its absolute deadline (p50, p99, max);
- missed ticks: deadlines skipped because a tick started a full period late or more;
- compute per tick: scheduler + safety filter + publish (p50, p99);
- end-to-end latency: from an observation's stamp (the newest camera frame's header stamp, the
  chunk's t0) to the moment the first command computed from that chunk is handed to the publisher,
  i.e. the first tick after the chunk's acceptance that tracks the reference (p50, p99). It spans
  transport, waiting for the next inference period, inference, and the wait for the next tick;
- the inference latency the worker saw, the node's CPU use and memory, what real-time scheduling
  the OS granted, the command inter-arrival jitter seen by the receiver, and the load average.

Without --model a randomly initialised model of the cpu_default size is used (timing does not
depend on the weights). Speed goals (p99 <= 0.5 ms, 0 missed) live here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.reliability.canary import attribution_table
from diffusion_controller.report import format_table, write_json
from diffusion_controller.settings.controller import SPECS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="tick timing of the real node's control loop under inference")
    add_node_arguments(p)
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds of running before the statistics restart (default 5)")
    p.add_argument("--source", choices=("feeder", "sim"), default="feeder",
                   help="who plays the arm and the camera (default: a publisher in this process)")
    p.add_argument("--camera", default="640x480",
                   help="feeder camera size WxH (default 640x480, bgr8)")
    p.add_argument("--camera-rate", type=float, default=30.0, help="feeder camera rate (Hz)")
    p.add_argument("--baseline", type=float, default=0.0,
                   help="first measure for this many seconds how late a bare SCHED_FIFO thread "
                        "in an idle process wakes (the platform's floor; default 0: skip)")
    p.add_argument("--json", help="write the result to this file")
    p.set_defaults(func=run)


def add_node_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with `bench soak`: the model and how the node runs it."""
    p.add_argument("--rate", type=float, default=SPECS["control_rate_hz"].default,
                   help="control rate (Hz, default: control_rate_hz's)")
    p.add_argument("--model", help="model directory (default: random cpu_default model)")
    p.add_argument("--backend", default="onnxruntime",
                   help="inference backend (default onnxruntime, on the CPU)")
    p.add_argument("--inference-mode", choices=SPECS["inference_mode"].choices,
                   default=SPECS["inference_mode"].default,
                   help="network in a child process (default) or a thread of the node")
    p.add_argument("--inference-rate", type=float, default=SPECS["inference_rate_hz"].default,
                   help="chunks per second (default: inference_rate_hz's)")
    p.add_argument("--steps", type=int, default=SPECS["ddim_steps"].default,
                   help="DDIM steps per chunk (default: ddim_steps's)")
    p.add_argument("--threads", type=int, default=1, help="backend CPU threads (default 1)")
    p.add_argument("--no-realtime", action="store_true",
                   help="do not ask for SCHED_FIFO for the loop thread")
    p.add_argument("--no-canary", action="store_true",
                   help="do not run the per-CPU canary processes that tell platform stalls "
                        "from the node's own misses (reliability/canary.py)")
    p.add_argument("--cpu", type=int, default=-1,
                   help="pin the loop thread to this core (-1: no pinning)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra node parameter (YAML value), repeatable")
    p.add_argument("--domain", type=int, default=None,
                   help="ROS_DOMAIN_ID for the run (default: a private one in 150..229, so no "
                        "real arm or other run hears the benchmark's fake arm)")


def use_private_domain(args: argparse.Namespace) -> int:
    """Run on `--domain` or a random private ROS domain (set in this process's environment, which
    the node processes inherit and rclpy reads at init)."""
    import random

    domain = args.domain if args.domain is not None else random.randrange(150, 230)
    if not 0 <= domain <= 232:
        raise SystemExit(f"--domain must be in [0, 232], got {domain}")
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain


def prepare_model(args: argparse.Namespace, workdir: Path) -> tuple[str, str]:
    """(model dir, engine cache dir): the given model or a random cpu_default one, with its ONNX
    export made here so the node does not need torch to start."""
    cache = workdir / "engine_cache"
    model = args.model
    if not model:
        from diffusion_controller.runtime.random_model import make_random_artifact

        model = make_random_artifact(workdir / "random_cpu_default", preset="cpu")
    if "onnxruntime" in args.backend or args.backend == "auto":
        from diffusion_controller.runtime.onnx_export import ensure_export

        ensure_export(model, cache)
    return str(model), str(cache)


def node_params(args: argparse.Namespace, model: str, cache: str, urdf: str | None
                ) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {
        "model_path": model,
        "backend": args.backend,
        "engine_cache_dir": cache,
        "inference_mode": args.inference_mode,
        "inference_rate_hz": float(args.inference_rate),
        "ddim_steps": int(args.steps),
        "inference_threads": int(args.threads),
        "control_rate_hz": float(args.rate),
        "realtime": not args.no_realtime,
        "cpu_affinity": int(args.cpu),
        "diagnostics_rate": 1.0,
        "warmup_runs": 2,
        "robot_description_timeout": 30.0,
    }
    if urdf:
        values["urdf_path"] = urdf
    for item in args.param:
        name, _, text = item.partition("=")
        if not name or not _:
            raise SystemExit(f"--param needs NAME=VALUE, got {item!r}")
        values[name] = yaml.safe_load(text)
    return values


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


STOP_GRACE_S = 15.0  # the node brakes, then joins its inference process


def supervise(feeder: Any, node: Any, sim: Any, body: Callable[[], dict[str, Any]]
              ) -> tuple[dict[str, Any], int]:
    """(body's result, the node's exit code): the node, the sim (if any) and the feeder are
    stopped whatever happened, and the node's log is printed when it failed or nothing came."""
    result: dict[str, Any] = {}
    try:
        result = body()
    finally:
        code = node.stop(STOP_GRACE_S)
        if sim is not None:
            sim.stop(STOP_GRACE_S)
        feeder.close()
        if code != 0 or not result:
            print(node.log()[-4000:])
    return result, code


def start_measuring(feeder: Any, node: Any, timeout: float, what: str, warmup: float = 0.0
                    ) -> None:
    """Wait until the node runs on accepted chunks, `warmup` seconds more, then restart its
    whole-run statistics (~/reset_statistics) so they cover only what follows."""
    from diffusion_controller.reliability.harness import diag_float

    def running() -> bool:
        if not node.alive:
            raise RuntimeError("the controller node exited:\n" + node.log()[-3000:])
        msg, values = feeder.entry("control loop")
        return msg == "running" and diag_float(values, "chunks_accepted") > 0

    feeder.wait_for(running, timeout, what)
    time.sleep(warmup)
    reply = feeder.trigger("reset_statistics")
    if not reply.success:
        raise RuntimeError(f"reset_statistics: {reply.message}")


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.control.panda import panda_urdf_path
    from diffusion_controller.reliability import harness as h

    if args.duration <= 0 or args.warmup < 0:
        raise SystemExit("--duration must be positive and --warmup >= 0")
    w, _, hh = args.camera.partition("x")
    camera = (int(hh), int(w))
    domain = use_private_domain(args)
    baseline: dict[str, Any] = {}
    if args.baseline > 0:
        from diffusion_controller.reliability.rt import wakeup_jitter

        baseline = wakeup_jitter(args.baseline, args.rate,
                                 priority=None if args.no_realtime else 80)
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        workdir = Path(tmp)
        model, cache = prepare_model(args, workdir)
        sim = None
        feeder = h.Feeder(play_arm=args.source == "feeder", camera_rate_hz=args.camera_rate,
                          image_size=camera)
        if args.source == "sim":
            sim = h.start_sim(workdir, {"image_width": 96, "image_height": 96})
        urdf = panda_urdf_path() if args.source == "feeder" else None
        params = node_params(args, model, cache, urdf)
        node = h.start_controller(params, workdir)
        result, code = supervise(feeder, node, sim,
                                 lambda: measure(args, feeder, node, sim, workdir))
        result["node_exit_code"] = code
        result["ros_domain_id"] = domain
        result.update({f"baseline_{k}": v for k, v in baseline.items()})
    print_result(result)
    if args.json:
        write_json(args.json, result)
    return 0 if code == 0 else 1


def measure(args: argparse.Namespace, feeder: Any, node: Any, sim: Any, workdir: Path
            ) -> dict[str, Any]:
    from diffusion_controller.reliability.canary import PlatformWatch, platform_report
    from diffusion_controller.reliability.harness import diag_float, diag_realtime, stolen_s

    start_measuring(feeder, node, 180.0, "the controller to run on chunks", args.warmup)
    watch = None if args.no_canary else PlatformWatch(args.duration, workdir)
    t0 = time.monotonic()
    cpu0, load0 = node.cpu_s(), load_average()
    faults0, steal0 = node.major_faults(), stolen_s()
    rss: list[float] = [node.rss_mb()]
    next_print = t0 + 60.0
    while time.monotonic() - t0 < args.duration:
        time.sleep(min(5.0, max(0.0, args.duration - (time.monotonic() - t0))))
        rss.append(node.rss_mb())
        if not node.alive:
            raise RuntimeError("the controller node exited:\n" + node.log()[-3000:])
        if time.monotonic() >= next_print:
            _, v = feeder.entry("control loop")
            print(f"  {time.monotonic() - t0:6.0f} s: tick error p99 "
                  f"{v.get('run_tick_error_p99_ms')} ms, max {v.get('run_tick_error_max_ms')} "
                  f"ms, missed {v.get('run_missed_ticks')}, load {load_average()}", flush=True)
            next_print += 60.0
    t1 = time.monotonic()
    cpu1, load1 = node.cpu_s(), load_average()
    faults1, steal1 = node.major_faults(), stolen_s()
    feeder.wait_diag_after(t1 + 0.05, timeout=10.0)
    _, loop = feeder.entry("control loop")
    _, inf = feeder.entry("inference")
    _, nodev = feeder.entry(": node")
    platform = platform_report(watch, loop)
    times, _ = feeder.commands_since(t0)
    times = times[times <= t1]
    gaps = np.diff(times) if times.size > 1 else np.zeros(0)
    period = 1.0 / args.rate
    rt = diag_realtime(loop)
    result: dict[str, Any] = {
        "rate_hz": float(args.rate),
        "duration_s": round(t1 - t0, 2),
        "gil_threads": nodev.get("realtime_threads", ""),
        "ticks": int(diag_float(loop, "run_tick_error_n")),
        "missed": int(diag_float(loop, "run_missed_ticks")),
        "p50_err_ms": diag_float(loop, "run_tick_error_p50_ms"),
        "p99_err_ms": diag_float(loop, "run_tick_error_p99_ms"),
        "p999_err_ms": diag_float(loop, "run_tick_error_p999_ms"),
        "max_err_ms": diag_float(loop, "run_tick_error_max_ms"),
        "last_overrun": loop.get("last_overrun", ""),
        "compute_p50_ms": diag_float(loop, "run_compute_p50_ms"),
        "compute_p99_ms": diag_float(loop, "run_compute_p99_ms"),
        "compute_max_ms": diag_float(loop, "run_compute_max_ms"),
        "e2e_p50_ms": diag_float(loop, "run_e2e_p50_ms"),
        "e2e_p99_ms": diag_float(loop, "run_e2e_p99_ms"),
        "e2e_chunks": int(diag_float(loop, "run_e2e_n")),
        "e2e_definition": "observation stamp (newest camera frame, the chunk's t0) -> first "
                          "command computed from that chunk handed to the publisher",
        "obs_to_chunk_p50_ms": diag_float(inf, "observation_to_chunk_p50_ms"),
        "inference_p50_ms": diag_float(inf, "latency_p50_ms"),
        "inference_p99_ms": diag_float(inf, "latency_p99_ms"),
        "inference_mode": args.inference_mode,
        "backend": inf.get("backend", args.backend),
        "inference_rate_hz": float(args.inference_rate),
        "ddim_steps": int(args.steps),
        "sched_fifo": bool(rt.get("sched_fifo", False)),
        "realtime_requested": not args.no_realtime,
        "affinity": rt.get("affinity", ""),
        "cpu_pinned": args.cpu,
        "received_commands": int(times.size),
        "receiver_gap_p99_ms": float(np.percentile(gaps, 99) * 1e3) if gaps.size else None,
        "receiver_gap_max_ms": float(np.max(gaps) * 1e3) if gaps.size else None,
        "receiver_gaps_over_2_periods": int(np.count_nonzero(gaps > 2 * period)),
        "gc_collections": nodev.get("gc_collections", ""),
        "gc_max_pause_ms": nodev.get("gc_max_pause_ms", ""),
        "memory_locked": nodev.get("memory_locked", ""),
        "node_major_faults": faults1 - faults0,
        "vm_stolen_s": round(steal1 - steal0, 2),
        "node_cpu_percent": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1),
        "node_rss_mb_start": round(rss[0], 1),
        "node_rss_mb_end": round(rss[-1], 1),
        "load_avg_start": load0,
        "load_avg_end": load1,
        "cpu_count": os.cpu_count(),
        "source": args.source,
        "camera": args.camera if args.source == "feeder" else "sim 96x96",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **platform,
    }
    return result


def print_result(result: dict[str, Any]) -> None:
    rows = [{"metric": k, "value": v} for k, v in result.items()
            if not isinstance(v, (list, dict)) and k != "e2e_definition"]
    print(format_table(rows, ["metric", "value"], title="bench loop"))
    print(f"end-to-end latency: {result.get('e2e_definition', '')}")
    table = attribution_table(result)
    if table:
        print(table)
