"""`diffusion-controller demo`: the shipped diffusion policy driving the simulated Panda.

    diffusion-controller demo --episodes 4
    diffusion-controller demo --task pick_place

Starts the simulated arm and the controller with the task's shipped model (each its own process,
over DDS), runs a few episodes of the reach-around-the-obstacle task (or, `--task pick_place`, of
the cube into a bin), shows progress, then prints the
summary table and where the run's artifact (JSON and plots) is. The same machinery as `eval`,
without the baseline unless asked for.
"""

from __future__ import annotations

import argparse

from diffusion_controller.commands.eval import add_common, run_episodes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the shipped policy on the simulated arm for a few episodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--episodes", type=int, default=4, help="number of episodes (default 4)")
    p.add_argument(
        "--baseline", default="none", help="also run a baseline model directory (default none)"
    )
    add_common(p)
    # The streamed trajectory still trips the modelled FR3 reflexes now and then (see
    # docs/benchmarks.md), so the demo shows the policy on the ideal arm unless asked otherwise.
    p.set_defaults(func=run, robot_controller="ideal")


def run(args: argparse.Namespace) -> int:
    return run_episodes(args, "demo", args.episodes, "demo")
