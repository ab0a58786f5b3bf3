"""`diffusion-controller bench closed-loop`: a model on the simulated arm, in process, sim time.

    diffusion-controller bench closed-loop --model models/pick_place_diffusion --task pick_place \
        --seeds 30000-30029

The quick check of a policy while it trains, between `bench vision` (offline) and `eval` (the real
nodes over DDS, in wall-clock time). Each tick of simulated time it does what the node and the sim
node do, in one process and in order: the world's joint state (arm and fingers) and, every
`--camera-every` ticks, its camera image go into the ROS-free controller core
(runtime/controller.Controller, built from the settings table's defaults plus `--set` changes);
every `--infer-every` ticks the inference worker runs once; the control loop ticks; each command
it publishes goes to the world as the arm's target (the ideal arm: no ros2_control model, so no
reflexes) with the gripper command of its stamp; then 10 ms of physics. `--blind` gives the policy
the episode's first frame every time (the scene as it was, never the arm or the cube moving). The
task's own monitor judges each episode (success, collision, missed_grasp, ...). Since nothing
waits on a wall clock, the figures do not depend on the host's load; what they leave out is the
transport, the real inference latency and the arm's controller, which `eval` measures.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.report import format_table, write_json

TICK = 0.01  # s, the control period the loop runs at


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("closed-loop", help="a model on the simulated arm, in process, sim time")
    p.add_argument("--model", required=True, help="model artifact directory")
    p.add_argument("--task", default="panda_reach", help="sim task (panda_reach, pick_place)")
    p.add_argument("--seeds", default="30000-30009", help="A-B (inclusive) or a comma list")
    p.add_argument("--backend", default="onnxruntime", help="inference backend")
    p.add_argument("--infer-every", type=int, default=10, help="ticks between inferences")
    p.add_argument("--camera-every", type=int, default=3, help="ticks between camera frames")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=YAML",
                   help="controller settings changed from their defaults")  # fmt: skip
    p.add_argument("--blind", action="store_true",
                   help="every camera frame is the episode's first (eval's `blind`)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the episodes as JSON")
    p.set_defaults(func=run)


def parse_seeds(text: str) -> list[int]:
    """'30000-30009' or '1,5,9' -> the seeds."""
    if "-" in text and "," not in text:
        a, b = (int(x) for x in text.split("-", 1))
        return list(range(a, b + 1))
    return [int(x) for x in text.split(",") if x.strip()]


def run_episode(
    world: Any,
    task: Any,
    seed: int,
    values: dict[str, Any],
    urdf: str,
    infer_every: int = 10,
    camera_every: int = 3,
    blind: bool = False,
) -> dict[str, Any]:
    """One episode of `task` at `seed`; its outcome as a JSON-able row."""
    from diffusion_controller.runtime.controller import Controller

    spec = task.sample(seed)
    world.reset(spec)
    monitor = task.monitor(spec, world)
    clock = {"t": 100.0}
    commands: list[Any] = []
    ctrl = Controller.build(values, urdf, clock=lambda: clock["t"], on_command=commands.append)
    names = list(world.joint_names)
    first: np.ndarray | None = None  # the episode's first frame, for `blind`
    start = time.monotonic()
    try:
        ctrl.enable(True)
        tick = 0
        while True:
            clock["t"] += TICK
            tick += 1
            q, qd, _ = world.joint_state_full()
            ctrl.joint_state(names, list(q), list(qd), clock["t"])
            if tick % camera_every == 1 or camera_every == 1:
                frame = world.render() if first is None or not blind else first
                first = frame if first is None else first
                ctrl.image("camera", clock["t"], lambda frame=frame: frame)
            if tick % infer_every == 1 or infer_every == 1:
                ctrl.worker.step_once()
            sent = len(commands)
            ctrl.loop.tick(now_mono=clock["t"])
            for cmd in commands[sent:]:
                world.command(cmd.positions)
                fingers = ctrl.gripper_command(cmd.stamp)
                if fingers is not None:
                    world.command_gripper(np.asarray(fingers, dtype=np.float64))
            contacts = world.step(TICK)
            if monitor.update(world.time, world.tool_position(), contacts.new_events,
                              world.min_clearance()):  # fmt: skip
                break
        interventions = int(ctrl.loop.status().interventions)
    finally:
        ctrl.close()
    out = monitor.outcome()
    label = getattr(out, "label", "") or (  # the reach task's outcome carries no label
        "success" if out.success else "collision" if out.collided else "timeout"
    )
    return {
        "seed": seed,
        "success": bool(out.success),
        "label": label,
        "side": getattr(out, "side", "none"),
        "time_s": round(float(out.time), 3),
        "commands": len(commands),
        "interventions": interventions,
        "wall_s": round(time.monotonic() - start, 2),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Success count, labels and the side (bin) of each success."""
    wins = [r for r in rows if r["success"]]
    return {"episodes": len(rows), "success": len(wins),
            "labels": dict(Counter(r["label"] for r in rows)),
            "sides": dict(Counter(r["side"] for r in wins))}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import yaml

    from diffusion_controller.control import assembly
    from diffusion_controller.control.panda import panda_urdf_path
    from diffusion_controller.sim.tasks import get_task
    from diffusion_controller.sim.world import SimWorld

    try:
        seeds = parse_seeds(args.seeds)
        task = get_task(args.task)
        changes = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
        values = assembly.default_values(
            model_path=args.model, backend=args.backend, inference_mode="thread",
            inference_timeout=30.0, inference_threads=1, **changes)  # fmt: skip
        if args.infer_every < 1 or args.camera_every < 1 or not seeds:
            raise ValueError("--infer-every and --camera-every must be >= 1, --seeds not empty")
    except (ValueError, KeyError, TypeError) as exc:
        print(f"bench closed-loop: {exc}")
        return 2
    urdf = Path(panda_urdf_path()).read_text(encoding="utf-8")
    rows = []
    with SimWorld() as world:
        for seed in seeds:
            rows.append(run_episode(world, task, seed, values, urdf, args.infer_every,
                                    args.camera_every, args.blind))  # fmt: skip
    summary = summarize(rows)
    print(format_table(rows, title=f"closed loop (in process, sim time): {args.model}"))
    print(f"success {summary['success']}/{summary['episodes']}  labels {summary['labels']}"
          f"  sides {summary['sides']}")  # fmt: skip
    if args.json:
        write_json(args.json, {"model": args.model, "task": args.task, "blind": args.blind,
                               "summary": summary,
                               "episodes": rows})  # fmt: skip
    return 0
