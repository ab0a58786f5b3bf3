"""`diffusion-controller train`: fit a policy to demonstrations and write a model artifact.

    diffusion-controller train --data demos/ --out models/dp --preset cpu --steps 20000

A rerun with the same --out resumes from out/checkpoints (use --no-resume to start over). Under
torchrun it trains on every GPU with DDP.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from diffusion_controller.report import format_table, write_json
from diffusion_controller.settings.panda import PANDA_JOINT_NAMES

# rosbag2 commands carry no joint names; the product's default arm is a Franka Panda.
PANDA_JOINTS = list(PANDA_JOINT_NAMES)  # the joint_names setting's default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion (or regression baseline) policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        required=True,
        help="episodes: a .npz file, a rosbag2 directory, a LeRobot v3 dataset directory, "
        "or a folder of these",
    )
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help="data spec (YAML): topics or LeRobot features for joints, actions (commands | "
        "trajectory | measured) and cameras; see docs/data.md (default: the built-in topics)",
    )
    p.add_argument("--out", required=True, help="output directory (artifact + checkpoints)")
    p.add_argument("--kind", choices=["diffusion", "regression"], default="diffusion")
    p.add_argument(
        "--preset",
        choices=["cpu", "paper"],
        default="cpu",
        help="network size: 'cpu' (small, fast) or 'paper' (Chi et al. 2023)",
    )
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 20000)")
    p.add_argument("--epochs", type=int, default=None, help="train for epochs instead of steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument(
        "--action-dt",
        type=float,
        default=None,
        help="grid spacing of the chunks in s (default: that of the data, else 0.1)",
    )
    p.add_argument("--horizon", type=int, default=None, help="chunk length H (default 16)")
    p.add_argument(
        "--n-obs-steps", type=int, default=None, help="observation frames To (default 2)"
    )
    p.add_argument(
        "--cameras",
        nargs="+",
        default=None,
        help="cameras to use (default: every camera in the data); in rosbag2 recordings "
        "camera NAME is read from /NAME/image_raw",
    )
    p.add_argument(
        "--joints",
        nargs="+",
        default=None,
        help="joint names in controller order (default: those of the .npz data or of the "
        "LeRobot state feature; for rosbag2 recordings panda_joint1..7)",
    )
    p.add_argument("--no-augment", action="store_true", help="disable random image shifts")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument(
        "--init-from", metavar="MODEL",
        help="start from this model artifact's weights and normalizers (same policy config): "
        "fine-tune a model, or continue one whose checkpoints are gone; a checkpoint in --out "
        "still resumes first",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for torch (default: torch's, one per core). On a CPU that other work "
        "shares, 1 is much faster than all cores: torch's threads wait for each other at every "
        "operation, so one preempted thread stalls them all (docs/benchmarks.md)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true",
                   help="no progress (neither the bar on a terminal nor the log lines)")
    p.add_argument("--json", metavar="PATH", help="also write the final metrics as JSON")
    p.set_defaults(func=run)


def _gripper_of(episodes: list, spec: object) -> object:
    """The gripper the data carries: the spec's, else the one the episodes were recorded with."""
    from diffusion_controller.data.gripper import GripperConfig

    g = getattr(spec, "gripper", None)
    if g is not None:
        return g.config
    found = episodes[0].meta.get("gripper")
    return None if not found else GripperConfig.from_dict(found)


def build_config(args: argparse.Namespace, episodes: list, spec: object = None) -> object:
    """The policy config for this data: arm joints (--joints, else the data's), then the gripper
    dims when the spec or the episodes carry a gripper."""
    from diffusion_controller.policy.config import PolicyConfig

    first = episodes[0]
    action_dt = (
        args.action_dt
        if args.action_dt is not None
        else (round(first.dt, 6) if len(first) > 1 else 0.1)
    )
    overrides: dict[str, object] = {
        "kind": args.kind,
        "cameras": list(args.cameras) if args.cameras else sorted(first.images),
        "action_dt": action_dt,
    }
    if not overrides["cameras"]:
        raise ValueError("the episodes hold no camera images")
    if args.horizon is not None:
        overrides["horizon"] = args.horizon
        overrides["n_action_steps"] = min(8, args.horizon)
    if args.n_obs_steps is not None:
        overrides["n_obs_steps"] = args.n_obs_steps
    gripper = _gripper_of(episodes, spec)
    extra = set(gripper.dim_names) if gripper is not None else set()
    if gripper is not None:
        overrides["gripper"] = gripper
    preset = PolicyConfig.cpu_default if args.preset == "cpu" else PolicyConfig.paper
    arm = list(args.joints or [n for n in first.joint_names if n not in extra])
    return preset(arm, **overrides)


def canonical_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (recorded in the model card)."""
    parts = ["diffusion-controller", "train"]
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command", "json", "quiet") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.data.loading import conform_episode, discover, load_episodes
    from diffusion_controller.data.spec import load_spec
    from diffusion_controller.policy.artifact import ArtifactError
    from diffusion_controller.policy.train import TrainConfig, train

    try:
        spec = load_spec(args.spec)
        items = discover(args.data)
        only_lerobot = bool(items) and all(kind == "lerobot" for kind, _ in items)
        action_dt = args.action_dt or 0.1
        if only_lerobot and args.action_dt is None:  # the dataset's own frame period
            from diffusion_controller.data.lerobot import read_info

            action_dt = 1.0 / float(read_info(items[0][1])["fps"])
        raw = load_episodes(
            args.data,
            action_dt=action_dt,
            joint_names=args.joints or (None if only_lerobot else PANDA_JOINTS),
            cameras=args.cameras,
            spec=spec,
        )
        cfg = build_config(args, raw, spec)
        episodes = [conform_episode(ep, cfg, source=ep.meta.get("source", "episode")) for ep in raw]
        tcfg = TrainConfig(
            steps=args.steps if args.steps is not None else TrainConfig.steps,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            num_workers=args.num_workers,
            checkpoint_every=args.checkpoint_every,
            augment=not args.no_augment,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("train: --threads must be at least 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    command = canonical_command(args)
    try:
        result = train(
            episodes,
            cfg,
            tcfg,
            args.out,
            resume=not args.no_resume,
            init_from=args.init_from,
            command=command,
            progress=not args.quiet,
        )
    except (ValueError, ArtifactError) as exc:  # a checkpoint or --init-from of another config
        print(f"train: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    metrics = {
        "kind": cfg.kind,
        "episodes": len(episodes),
        **result.metrics(),
        "artifact": os.path.abspath(args.out),
    }
    rows = [{"metric": k, "value": v} for k, v in metrics.items()]
    print(format_table(rows, title=f"trained {cfg.kind} policy", digits=4))
    if args.json:
        write_json(
            args.json,
            {**metrics, "weights_sha256": result.weights_sha256, "history": result.history},
        )
    return 0
