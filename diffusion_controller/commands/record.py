"""`diffusion-controller record`: scripted demonstrations of a task as rosbag2 recordings.

`--task panda_reach` (default: round the obstacle, left or right) or `--task pick_place` (pick the
cube, drop it in the left or the right bin; its recordings add the gripper command on
/gripper_controller/commands, one position per finger, beside the arm's).

The scripted demonstrator drives SimWorld in-process on sim time (much faster than real time, no
DDS), and each episode becomes one rosbag2 directory (MCAP) with the topics a real arm records.
Episodes are named by seed (`episode_000042`), written under `.partial/` and moved into place only
once complete, so an interrupted run resumes where it stopped: complete episodes are skipped.
Recorders on disjoint seed ranges may share one `--out` (one per core).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.report import format_table, write_json

_NS = 1_000_000_000


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "record",
        help="record scripted demonstrations in the simulator as rosbag2 (mcap) episodes",
        description=__doc__,
    )
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes (seeds)")
    parser.add_argument("--out", required=True, help="output directory (one bag per episode)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first episode")
    from diffusion_controller.sim.tasks import DEFAULT_TASK, TASK_NAMES

    parser.add_argument("--task", choices=TASK_NAMES, default=DEFAULT_TASK, help="the task")
    parser.add_argument("--image-size", type=int, default=96, help="camera image side (pixels)")
    parser.add_argument("--camera-rate", type=float, default=15.0, help="camera rate (Hz)")
    parser.add_argument(
        "--side",
        choices=["left", "right"],
        default=None,
        help="force the demonstrator's side or bin (default: a fair coin per episode)",
    )
    parser.add_argument(
        "--keep-failures",
        action="store_true",
        help="keep episodes the demonstrator failed (default: discard them)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress (neither the bar on a terminal nor the log lines)")
    parser.set_defaults(func=run)


@dataclass
class EpisodeResult:
    seed: int
    status: str  # "recorded" | "resumed" | "discarded"
    success: bool
    label: str  # the task's verdict ("success", "collision", ...; the reach task: success/failure)
    side: str
    time: float  # sim seconds to success (or to the collision / the end)
    duration: float  # sim seconds recorded
    collisions: int
    min_clearance: float
    size_mb: float
    wall_s: float

    def row(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "status": self.status,
            "success": self.success,
            "label": self.label,
            "side": self.side,
            "time_s": self.time,
            "duration_s": self.duration,
            "collisions": self.collisions,
            "min_clearance_m": self.min_clearance,
            "size_mb": self.size_mb,
            "wall_s": self.wall_s,
        }


def episode_name(seed: int) -> str:
    return f"episode_{seed:06d}"


def _dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def record_episode(
    world: Any,
    seed: int,
    bag_dir: Path,
    *,
    camera_rate: float = 15.0,
    side: str | None = None,
    task_name: str = "panda_reach",
) -> tuple[Any, Any]:
    """Plan and run one demonstration, writing it to `bag_dir` (which must not exist yet).

    Returns (TaskOutcome, DemoPlan). Joint states are recorded at every 10 ms tick, the command
    at the time it was sent, and camera frames at `camera_rate` on sim time; /sim/task is written
    at the start and again at the end with the outcome added. A task with a gripper also records
    the finger command sent with each arm command.
    """
    from diffusion_controller.data.bag_writer import DEFAULT_TOPICS
    from diffusion_controller.data.rosbag_io import BagWriter
    from diffusion_controller.sim.rollout import CONTROL_DT, rollout
    from diffusion_controller.sim.tasks import get_task

    kind = get_task(task_name)
    spec = kind.sample(seed)
    world.reset(spec)
    plan = kind.plan(spec, side=side, world=world)
    gripper_at = getattr(plan, "gripper_at", None)
    base = (time.time_ns() // 1_000_000) * 1_000_000  # episodes carry a real-looking epoch
    task = spec.to_dict()
    task["extra"] = {"demonstrator": {"side": plan.side, "duration": plan.duration}}
    frame_period = 1.0 / camera_rate
    next_frame = [0.0]

    def ns(t: float) -> int:
        return base + round(t * _NS)

    gripper_topic = DEFAULT_TOPICS["gripper_commands"] if gripper_at is not None else None
    with BagWriter(bag_dir, gripper_topic=gripper_topic) as writer:

        def sample(t: float) -> None:
            q, v = world.joint_state()
            writer.joint_state(ns(t), world.joint_names, q, v)
            if t >= next_frame[0] - 1e-9:
                writer.image(ns(t), world.render())
                next_frame[0] += frame_period

        def on_start(_: Any) -> None:
            writer.task(ns(0.0), json.dumps(task))
            sample(0.0)

        def on_tick(t: float, cmd: np.ndarray, _: Any) -> None:
            writer.command(ns(t - CONTROL_DT), cmd)
            if gripper_at is not None:
                writer.gripper_command(ns(t - CONTROL_DT), gripper_at(t - CONTROL_DT))
            sample(t)

        outcome = rollout(
            world,
            spec,
            plan.command_at,
            gripper_at=gripper_at,
            min_time=plan.duration + 0.3,
            max_time=min(spec.timeout, plan.duration + 2.0),
            on_start=on_start,
            on_tick=on_tick,
        )
        task["outcome"] = {
            "success": outcome.success,
            "label": getattr(outcome, "label", "success" if outcome.success else "failure"),
            "side": outcome.side,
            "collisions": outcome.collisions,
            "time": outcome.time,
            "min_clearance": outcome.min_clearance,
            "recorded": world.time,
        }
        writer.task(ns(world.time), json.dumps(task))
    return outcome, plan


def _recorded_outcome(bag_dir: Path) -> dict[str, Any]:
    from diffusion_controller.data.rosbag_io import read_task_messages

    try:
        texts = read_task_messages(bag_dir)
        return dict(json.loads(texts[-1]).get("outcome", {})) if texts else {}
    except (ValueError, json.JSONDecodeError):
        return {}


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        print("record: --episodes must be at least 1", file=sys.stderr)
        return 2
    if not 8 <= args.image_size <= 1024:
        print("record: --image-size must be within 8..1024", file=sys.stderr)
        return 2
    if not 0.5 <= args.camera_rate <= 100.0:
        print("record: --camera-rate must be within 0.5..100 Hz", file=sys.stderr)
        return 2
    from diffusion_controller.data.rosbag_io import is_bag_dir
    from diffusion_controller.sim.world import SimWorld, WorldConfig

    out = Path(args.out)
    partial = out / ".partial"
    out.mkdir(parents=True, exist_ok=True)
    results: list[EpisodeResult] = []
    seeds = [args.first_seed + i for i in range(args.episodes)]
    # Leftovers of an interrupted run are never complete. Only this run's seeds are cleared, so
    # that recorders on disjoint seed ranges can share one output directory (one per core).
    for seed in seeds:
        shutil.rmtree(partial / episode_name(seed), ignore_errors=True)
    started = time.monotonic()
    from diffusion_controller.progress import Progress

    bar = Progress("record", len(seeds), "episode", quiet=args.quiet)
    world = SimWorld(WorldConfig(image_width=args.image_size, image_height=args.image_size))
    try:
        for seed in seeds:
            final = out / episode_name(seed)
            if is_bag_dir(final):
                got = _recorded_outcome(final)
                results.append(
                    EpisodeResult(
                        seed,
                        "resumed",
                        bool(got.get("success", False)),
                        str(got.get("label", "?")),
                        str(got.get("side", "?")),
                        float(got.get("time", float("nan"))),
                        float(got.get("recorded", float("nan"))),
                        int(got.get("collisions", 0)),
                        float(got.get("min_clearance", float("nan"))),
                        _dir_size_mb(final),
                        0.0,
                    )
                )
                bar.update(1, seed=seed, outcome="already there")
                continue
            if final.exists():  # not a complete bag: remove and redo
                shutil.rmtree(final)
            partial.mkdir(parents=True, exist_ok=True)
            tmp = partial / episode_name(seed)
            t0 = time.monotonic()
            outcome, _ = record_episode(
                world, seed, tmp, camera_rate=args.camera_rate, side=args.side,
                task_name=args.task,
            )  # fmt: skip
            keep = outcome.success or args.keep_failures
            size = _dir_size_mb(tmp)
            if keep:
                os.replace(tmp, final)
            else:
                shutil.rmtree(tmp)
            results.append(
                EpisodeResult(
                    seed,
                    "recorded" if keep else "discarded",
                    outcome.success,
                    getattr(outcome, "label", "success" if outcome.success else "failure"),
                    outcome.side,
                    outcome.time,
                    world.time,
                    outcome.collisions,
                    outcome.min_clearance,
                    size,
                    time.monotonic() - t0,
                )
            )
            verdict = "success" if outcome.success else "failure"
            bar.update(1, seed=seed, outcome=f"{verdict} {outcome.side}",
                       kept=sum(r.status != "discarded" for r in results))
    finally:
        bar.close()
        world.close()
        for seed in seeds:
            shutil.rmtree(partial / episode_name(seed), ignore_errors=True)
        with contextlib.suppress(OSError):  # removed only once no other recorder writes into it
            partial.rmdir()
    wall = time.monotonic() - started
    recorded = [r for r in results if r.status == "recorded"]
    kept = [r for r in results if r.status != "discarded"]
    summary = {
        "task": args.task,
        "episodes": len(results),
        "recorded": len(recorded),
        "resumed": sum(r.status == "resumed" for r in results),
        "discarded": sum(r.status == "discarded" for r in results),
        "success": sum(r.success for r in results),
        "left": sum(r.side == "left" for r in kept),
        "right": sum(r.side == "right" for r in kept),
        "mean_time_s": float(np.mean([r.time for r in kept])) if kept else float("nan"),
        "mean_duration_s": float(np.mean([r.duration for r in kept])) if kept else float("nan"),
        "mean_size_mb": float(np.mean([r.size_mb for r in kept])) if kept else float("nan"),
        "episodes_per_min": 60.0 * len(recorded) / sum(r.wall_s for r in recorded)
        if recorded
        else float("nan"),
        "wall_s": wall,
        "out": str(out),
    }
    print(format_table([r.row() for r in results], title=f"record -> {out}"))
    print()
    print(format_table([summary], title="summary"))
    if args.json:
        write_json(args.json, {"summary": summary, "episodes": [r.row() for r in results]})
    if summary["discarded"]:
        print(f"warning: {summary['discarded']} failed demonstration(s) discarded", file=sys.stderr)
    return 0
