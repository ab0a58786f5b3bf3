"""`diffusion-controller eval`: closed-loop evaluation of a policy (and a baseline) in simulation.

    diffusion-controller eval --seeds 20 --perturb none,delay,noise,obstacle_shift,dropout
    diffusion-controller eval --task pick_place --perturb none,blind --json summary.json

The real controller node and the real simulated arm run as processes of their own and talk over
DDS, in a ROS domain of the run's own; this command drives episodes through their services and
parameters, checks every command independently, and writes one artifact directory per run
(config.json, seeds.json, episodes.csv/json, summary.json, plots). Eval seeds default to 10000
onwards, disjoint from the training demonstrations (seeds 0-299). `--task pick_place` runs the
cube-into-a-bin task (sim_arm's `task`): the modes are the two bins, the failures the task's own
labels (missed_grasp, dropped, wrong_place, timeout, collision, reflex), and cube_outcomes.png
shows where the cubes lay, coloured by outcome.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from diffusion_controller.report import format_table, write_json
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.sim import TASK_NAMES

TABLE_COLUMNS = [
    "policy", "perturbation", "success", "left", "right", "collisions", "violations",
    "interventions", "infer_p50_ms", "tick_p99_ms", "failures",
]  # fmt: skip


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by `eval` and `demo`."""
    p.add_argument(
        "--task",
        choices=list(TASK_NAMES),
        default=TASK_NAMES[0],
        help="the simulated task (sim_arm `task`): panda_reach (round the obstacle to the target, "
        "default) or pick_place (the cube into the left or the right bin)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model artifact directory (default: the task's shipped one, "
        "models/<task>_diffusion)",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=10000,
        help="first seed of the panel (default 10000, disjoint from training 0-299)",
    )
    p.add_argument(
        "--perturb",
        default="none",
        help="comma list of none, delay, noise, obstacle_shift (not pick_place), dropout, blind "
        "(every camera frame of an episode replaced by its first), warm_start_off and "
        "inpainting_off (the controller's `warm_start` false / `prefix_steps` 0 for the episode) "
        "(default none)",
    )
    p.add_argument(
        "--backend",
        choices=list(SPECS["backend"].choices),
        default="auto",
        help="the controller's inference backend (default auto)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds the policy gets per episode (default: the task's, 15 reach, 20 pick_place)",
    )
    p.add_argument("--out", default=None, help="artifact directory (default runs/<cmd>-<time>)")
    p.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="ROS domain for the run's nodes (default: a random one in 1-101, never "
        "the current ROS_DOMAIN_ID, so no real arm hears the commands)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines (the table and the artifact path still print)")
    p.add_argument(
        "--no-keepout",
        action="store_true",
        help="do not give the obstacle to the safety filter as keep-out spheres (only the "
        "camera sees it): measures what the policy itself does",
    )
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    p.add_argument(
        "--robot-controller",
        choices=("forward", "trajectory", "ideal"),
        default="trajectory",
        help="the simulated robot side (sim_arm `robot_controller`): trajectory, a "
        "joint_trajectory_controller fed by the node's `command_interface` trajectory "
        "(default, what a Franka needs), or forward, a 1 kHz forward controller fed the 100 Hz "
        "positions; both check the FR3's limits at 1 kHz and count reflexes. ideal: the arm "
        "tracks each 100 Hz position with no 1 kHz model (no reflexes: what the policy and the "
        "safety filter do on their own; demo's default, see docs/real_robot.md)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="closed-loop evaluation through the real controller and sim nodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument(
        "--baseline",
        default=None,
        help="baseline model directory, or 'none' (default: the task's shipped "
        "models/<task>_regression; without one, panda_reach runs no baseline and pick_place "
        "stops, naming --baseline)",
    )
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    p.set_defaults(func=run)


def config_from_args(
    args: argparse.Namespace, prefix: str, seeds: int, baseline: str | None
) -> Any:
    from diffusion_controller.eval.perturbations import parse_perturbations
    from diffusion_controller.eval.runner import EvalConfig

    return EvalConfig(
        task=args.task,
        model=args.model,
        baseline=baseline,
        seeds=seeds,
        first_seed=args.first_seed,
        perturbations=parse_perturbations(args.perturb),
        out=args.out,
        prefix=prefix,
        backend=args.backend,
        timeout=args.timeout,
        domain_id=args.domain_id,
        plots=not args.no_plots,
        keepout=not args.no_keepout,
        robot_controller=args.robot_controller,
    )


def execute(cfg: Any, json_path: str | None, title: str, quiet: bool = False) -> int:
    """Run, print progress (unless `quiet`), the table and where the artifact is; 0 on a
    completed run."""
    from diffusion_controller.eval.client import EvalError
    from diffusion_controller.eval.runner import run_eval

    def progress(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    try:
        outcome = run_eval(cfg, progress)
    except EvalError as exc:
        print(f"{title} failed: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{title}: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_table(outcome.table, TABLE_COLUMNS, digits=1, title=title))
    s = outcome.summary
    print()
    lines = [
        f"{s['policy']}: success {s['success_rate']:.0%} of {s['episodes']}, sides left "
        f"{s['mode_fractions']['left']:.0%} / right {s['mode_fractions']['right']:.0%}, "
        f"{s['collisions']} collisions, {s['safety_violations']} safety violations"
    ]
    b = s.get("baseline")
    if b:
        lines.append(
            f"{b['policy']} (baseline): success {b['success_rate']:.0%} of "
            f"{b['episodes']}, sides left {b['mode_fractions']['left']:.0%} / right "
            f"{b['mode_fractions']['right']:.0%}, {b['collisions']} collisions, "
            f"{b['safety_violations']} safety violations"
        )
    lines += [f"note: {n}" for n in outcome.notes]
    from diffusion_controller.eval.artifact import plots_for

    figures = ", ".join(plots_for(cfg.task))
    lines.append(f"artifact: {outcome.out_dir} (summary.json, episodes.csv, {figures})")
    print("\n".join(lines))
    if json_path:
        write_json(json_path, s)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_episodes(args, "eval", args.seeds, "closed-loop evaluation")


def run_episodes(args: argparse.Namespace, command: str, count: int, title: str) -> int:
    """`eval` and `demo`: the configuration from the arguments (exit 2 with the reason when it is
    invalid), then the run."""
    try:
        cfg = config_from_args(args, command, count, args.baseline)
    except ValueError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    return execute(cfg, args.json, title, quiet=bool(getattr(args, "quiet", False)))
