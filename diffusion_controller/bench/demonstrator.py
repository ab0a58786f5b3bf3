"""`diffusion-controller bench demonstrator`: the scripted expert's success rate, and a blind one's.

    diffusion-controller bench demonstrator --task pick_place --seeds 50 --first-seed 10000
    diffusion-controller bench demonstrator --task pick_place --seeds 50 --blind

Runs the task's demonstrator in-process against the simulator (sim/rollout.py, no DDS) on a seed
panel, each episode until the task's verdict or its timeout, and counts verdicts (pick_place:
success, collision, dropped, wrong_place, missed_grasp, timeout) and modes (which bin, which side).
`--blind` (pick_place only) gives the demonstrator the mean cube position instead of the true one:
the same motions, aimed where the cube is on average, i.e. a policy that ignores the camera. The
task needs the camera when the blind figure is low.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from diffusion_controller.report import format_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    from diffusion_controller.sim.tasks import DEFAULT_TASK, TASK_NAMES

    p = sub.add_parser("demonstrator", help="scripted expert success rate (and a blind one's)")
    p.add_argument("--task", choices=TASK_NAMES, default=DEFAULT_TASK)
    p.add_argument("--seeds", type=int, default=50, help="number of seeds (default 50)")
    p.add_argument("--first-seed", type=int, default=10000, help="first seed (default 10000)")
    p.add_argument("--blind", action="store_true",
                   help="aim at the mean cube position (pick_place)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the summary and episodes as JSON")
    p.set_defaults(func=run)


def panel(task_name: str, seeds: list[int], blind: bool = False) -> dict[str, Any]:
    """Run the demonstrator on `seeds`; returns {"summary": ..., "episodes": [...]}."""
    from diffusion_controller.sim.rollout import rollout
    from diffusion_controller.sim.tasks import get_task
    from diffusion_controller.sim.world import SimWorld

    task = get_task(task_name)
    if blind and task_name != "pick_place":
        raise ValueError("--blind is defined for pick_place (the mean cube position)")
    rows = []
    with SimWorld() as world:
        for seed in seeds:
            spec = task.sample(seed)
            world.reset(spec)
            if blind:
                from diffusion_controller.sim.pick_demonstrator import plan_pick_place
                from diffusion_controller.sim.pick_place import mean_cube

                plan = plan_pick_place(spec, cube=mean_cube())
            else:
                plan = task.plan(spec, world=world)
            out = rollout(world, spec, plan.command_at,
                          gripper_at=getattr(plan, "gripper_at", None))  # fmt: skip
            label = getattr(out, "label", "") or ("success" if out.success else "failure")
            rows.append({"seed": seed, "planned": plan.side, "label": label, "side": out.side,
                         "success": out.success, "time_s": out.time,
                         "collisions": out.collisions})  # fmt: skip
    n = len(rows)
    wins = [r for r in rows if r["success"]]
    summary = {
        "task": task_name,
        "blind": blind,
        "seeds": n,
        "first_seed": seeds[0] if seeds else None,
        "success_rate": len(wins) / n if n else float("nan"),
        "labels": dict(Counter(r["label"] for r in rows)),
        "modes": dict(Counter(r["side"] for r in wins)),
    }
    return {"summary": summary, "episodes": rows}


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        print("bench demonstrator: --seeds must be at least 1")
        return 2
    started = time.monotonic()
    try:
        result = panel(args.task, [args.first_seed + i for i in range(args.seeds)], args.blind)
    except ValueError as exc:
        print(f"bench demonstrator: {exc}")
        return 2
    result["summary"]["wall_s"] = time.monotonic() - started
    print(format_table(result["episodes"], title=f"demonstrator on {args.task}"))
    print()
    s = dict(result["summary"])
    s["labels"] = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items()))
    s["modes"] = ", ".join(f"{k} {v}" for k, v in sorted(s["modes"].items()))
    print(format_table([s], title="summary"))
    if args.json:
        write_json(args.json, result)
    return 0
