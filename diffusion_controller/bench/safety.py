"""`diffusion-controller bench safety`: tick time and safety of the MPC/CBF filter on a Panda.

A Panda tracks a smooth joint-space figure that sweeps through the workspace and, on purpose,
into keep-out spheres, the table, the workspace box and the joint limits. Each tick is timed
around `SafetyFilter.step` (forward kinematics, constraint build, OSQP solve, checks), and every
commanded state is checked independently with the robot model: joint limits, and link-sphere
clearance to the table, the box, the obstacles and the self-collision pairs.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from diffusion_controller.control.ticker import sleep_until

GOALS = "goal: p50 <= 0.3 ms, p99 <= 1 ms, 0 violations"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("safety", help="safety filter tick time and violations")
    parser.add_argument("--ticks", type=int, default=5000, help="timed ticks per mode (>= 1)")
    parser.add_argument("--modes", default="cbf,mpc", help="comma-separated: cbf, mpc")
    parser.add_argument("--seed", type=int, default=0, help="seed of the figure's phases")
    parser.add_argument(
        "--paced", action="store_true",
        help="run the ticks on the filter's own schedule (absolute deadlines at rate_hz, "
             "sleeping in between, as the control loop does) instead of back to back: slower "
             "to run, and closer to what a tick costs in the loop (caches go cold in between)",
    )
    parser.add_argument(
        "--params", metavar="FILE", default=None,
        help="the node's parameter file the filter is built from, through the node's own path "
             "(default: config/arm.yaml of this package); --modes overrides its safety_mode",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.set_defaults(func=run)


# Keep-out spheres the figure runs into; added when the parameter file has none (a deployment's
# obstacles are usually set live), so the measured filter carries obstacle rows as well.
BENCH_OBSTACLES = [0.55, 0.25, 0.35, 0.08, 0.45, -0.30, 0.55, 0.10, 0.20, 0.45, 0.75, 0.07]


def default_params_file() -> str:
    """config/arm.yaml: in the source tree, or where colcon/pip installed the package's share."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, "..", "..", "config", "arm.yaml")]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(os.path.join(get_package_share_directory("diffusion_controller"),
                                       "config", "arm.yaml"))
    except Exception:  # not installed through ament: the source tree only
        pass
    for path in candidates:
        if os.path.isfile(path):
            return os.path.normpath(path)
    raise SystemExit("bench safety: config/arm.yaml not found; pass --params FILE")


def settings(params_file: str | None, mode: str) -> dict[str, Any]:
    """The node's settings from the parameter file, with this mode and the bench obstacles."""
    from diffusion_controller.settings.checks import load_param_file

    values = load_param_file(params_file or default_params_file())
    values["safety_mode"] = mode
    if not values["obstacles"]:
        values["obstacles"] = list(BENCH_OBSTACLES)
    return values


def _scene(values: dict[str, Any]) -> dict[str, Any]:
    from diffusion_controller.control import assembly

    return {
        "table_z": float(values["table_z"]),
        "workspace_min": tuple(values["workspace_min"]),
        "workspace_max": tuple(values["workspace_max"]),
        "obstacles": assembly.obstacles(values["obstacles"]),
        "self_collision_pairs": assembly.parse_pairs(values["self_collision_pairs"]),
    }


def figure(t: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference (q, v, a) at times t [T]: a Lissajous figure about a forward-leaning ready pose.
    Unfiltered, it runs into a keep-out sphere about 20% of the time, past joint 7's limits about
    14%, out of the workspace box about 2% and into itself about 1%."""
    from diffusion_controller.control import panda

    rng = np.random.default_rng(seed)
    amp = np.array([1.0, 0.6, 0.6, 0.8, 0.9, 0.7, 2.3])
    freq = np.array([0.11, 0.17, 0.13, 0.19, 0.23, 0.16, 0.13]) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, 7)
    center = panda.PANDA_READY_Q + np.array([0.0, 0.45, 0.0, 0.5, 0.0, 0.0, 0.0])
    arg = freq[None, :] * t[:, None] + phase[None, :]
    q = center + amp * np.sin(arg)
    v = amp * freq * np.cos(arg)
    a = -amp * freq * freq * np.sin(arg)
    return q, v, a


class Checker:
    """Independent check of commanded states against limits and barriers (robot model FK)."""

    def __init__(self, robot, limits, scene: dict[str, Any]) -> None:
        self.robot, self.lim, self.scene = robot, limits, scene
        self.moving = robot.moving
        self.radii = robot.sphere_radii
        groups = np.array(robot.sphere_groups)
        pa, pb = [], []
        for ga, gb in scene["self_collision_pairs"]:
            for i in np.flatnonzero(groups == ga):
                for j in np.flatnonzero(groups == gb):
                    pa.append(i)
                    pb.append(j)
        self.pa, self.pb = np.array(pa, dtype=int), np.array(pb, dtype=int)

    def violations(self, q: np.ndarray, v: np.ndarray, a: np.ndarray) -> list[str]:
        lim, out = self.lim, []
        if np.any(q < lim.lower - 1e-9) or np.any(q > lim.upper + 1e-9):
            out.append("position")
        if np.any(np.abs(v) > lim.velocity + 1e-9):
            out.append("velocity")
        if np.any(np.abs(a) > lim.acceleration + 1e-9):
            out.append("acceleration")
        p = self.robot.sphere_positions(q)
        pm, rm = p[self.moving], self.radii[self.moving]
        lo = np.array(self.scene["workspace_min"], dtype=float)
        hi = np.array(self.scene["workspace_max"], dtype=float)
        lo[2] = max(lo[2], self.scene["table_z"])
        if np.any(pm - rm[:, None] < lo - 1e-6) or np.any(pm + rm[:, None] > hi + 1e-6):
            out.append("workspace")
        for o in self.scene["obstacles"]:
            if np.any(np.linalg.norm(pm - o.center, axis=1) < rm + o.radius - 1e-6):
                out.append(f"obstacle {o.name}")
        if len(self.pa):
            d = np.linalg.norm(p[self.pa] - p[self.pb], axis=1)
            if np.any(d < self.radii[self.pa] + self.radii[self.pb] - 1e-6):
                out.append("self-collision")
        return out


def bench_mode(
    mode: str, ticks: int, seed: int, warmup: int = 50, paced: bool = False,
    params_file: str | None = None,
) -> dict[str, Any]:
    from diffusion_controller.control import assembly, panda

    values = settings(params_file, mode)
    robot, f = assembly.safety_filter_from_settings(panda.panda_urdf_path(), values)
    scene = _scene(values)
    dt = f.dt
    horizon = f.config.mpc_horizon
    t = np.arange(ticks + warmup + horizon + 1) * dt
    q_ref, v_ref, a_ref = figure(t, seed)
    f.reset(panda.PANDA_READY_Q)
    checker = Checker(robot, f.limits, scene)
    times = np.empty(ticks)
    cpu = np.empty(ticks)
    iters = np.empty(ticks)
    braking = intervened = 0
    violations: dict[str, int] = {}
    bad_ticks = 0
    sq_err = 0.0
    deadline = time.perf_counter()
    for k in range(ticks + warmup):
        if paced:
            deadline += dt
            sleep_until(deadline, clock=time.perf_counter)
        fut = q_ref[k:k + horizon] if mode == "mpc" else None
        c0 = time.thread_time()
        t0 = time.perf_counter()
        r = f.step(q_ref[k], v_ref[k], a_ref[k], future_ref=fut)
        elapsed = time.perf_counter() - t0
        busy = time.thread_time() - c0
        found = checker.violations(r.positions, r.velocities, r.accelerations)
        if k < warmup:
            continue
        i = k - warmup
        times[i] = elapsed * 1e3
        cpu[i] = busy * 1e3
        iters[i] = r.iterations
        braking += r.status != "ok"
        intervened += r.intervened
        sq_err += float(np.sum((r.positions - q_ref[k]) ** 2))
        if found:
            bad_ticks += 1
            for name in found:
                violations[name] = violations.get(name, 0) + 1
    return {
        "mode": mode + (" paced" if paced else ""),
        "constraints": f.constraint_count,
        **f.barrier_row_counts,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": float(np.max(times)),
        "violations": bad_ticks,
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
        "qp_rows": f.qp_rows,
        "iters_p50": float(np.percentile(iters, 50)),
        "intervened": intervened / ticks,
        "braking": braking,
        "track_rms_rad": float(np.sqrt(sq_err / (ticks * robot.nq))),
        "violation_kinds": violations,
    }


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.report import format_table, write_json

    if args.ticks < 1:
        raise SystemExit("--ticks must be >= 1")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("cbf", "mpc")]
    if bad or not modes:
        raise SystemExit(f"--modes: unknown {bad or modes}; use cbf and/or mpc")
    params_file = args.params or default_params_file()
    rows = [bench_mode(mode, args.ticks, args.seed, paced=args.paced, params_file=params_file)
            for mode in modes]
    columns = ["mode", "constraints", "self_collision_rows", "qp_rows", "p50_ms", "p99_ms",
               "max_ms", "violations",
               "cpu_p50_ms", "cpu_p99_ms", "iters_p50", "intervened", "braking",
               "track_rms_rad"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    schedule = "paced at the filter's rate" if args.paced else "back to back"
    title = (f"bench safety: Panda as deployed by {params_file}, {args.ticks} ticks per mode "
             f"({schedule}), "
             f"{os.cpu_count()} CPUs, "
             f"load {load:.1f} ({GOALS}; cpu_* is the thread's own CPU time)")
    print(format_table(rows, columns, title=title))
    for row in rows:
        if row["violation_kinds"]:
            print(f"{row['mode']}: violations by kind {row['violation_kinds']}")
    if args.json:
        write_json(args.json, {"rows": rows, "ticks": args.ticks, "seed": args.seed,
                               "params": params_file})
    return 0
