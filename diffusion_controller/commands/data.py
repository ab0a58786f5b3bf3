"""`diffusion-controller data inspect`: what a recording holds, before training on it.

    diffusion-controller data inspect demos/ --spec fr3_kinesthetic.yaml
    diffusion-controller data inspect demos/ --json          # the report as JSON on stdout

Lists every rosbag2 recording (or LeRobot v3 dataset) under DIR: topics, types, rates,
durations, clock offsets between the streams the spec uses, episodes found, the frames a
training run would use, and what is missing or inconsistent. Exits 1 when a recording cannot be
used for training, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from diffusion_controller.report import _jsonable, format_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="inspect demonstration data (rosbag2 recordings, LeRobot datasets)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inner = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    inner.required = True
    q = inner.add_parser("inspect", help="report topics, rates, clocks, episodes and problems")
    q.add_argument("dir", help="a rosbag2 directory, a LeRobot dataset, or a folder of these")
    q.add_argument("--spec", default=None, metavar="FILE", help="data spec (YAML), as for train")
    q.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="print the report as JSON (or write it to PATH)",
    )
    q.add_argument("--action-dt", type=float, default=None, help="grid spacing (default 0.1 s)")
    q.add_argument("--joints", nargs="+", default=None, help="joint names in controller order")
    q.add_argument("--cameras", nargs="+", default=None, help="camera names (/NAME/image_raw)")
    q.set_defaults(func=run)


def _print_text(report: dict[str, Any]) -> None:
    for rec in report["recordings"]:
        head = f"{rec['kind']} {rec['path']}"
        if rec["kind"] == "rosbag2" and "storage" in rec:
            head += f"  ({rec['storage']}, {rec['duration_s']:.2f} s, {rec['message_count']} msgs)"
        elif rec["kind"] == "lerobot" and "fps" in rec:
            head += f"  ({rec['format']}, {rec['fps']} fps)"
        print(head)
        if rec.get("topics"):
            cols = ["topic", "type", "count", "rate_hz", "duration_s", "stamped", "clock_offset_ms"]
            print(format_table(rec["topics"], columns=cols, digits=2))
        if rec.get("features"):
            rows = [{"feature": k, **v} for k, v in rec["features"].items()]
            print(format_table(rows, columns=["feature", "dtype", "shape"]))
        clock = rec.get("clock")
        if clock and clock["worst_pair"][0]:
            a, b = clock["worst_pair"]
            print(
                f"clocks: worst pair {a} vs {b}: {clock['worst_diff_ms']:.1f} ms "
                f"(tolerance {clock['tolerance_ms']:.0f} ms)"
            )
        if rec.get("plan"):
            print(f"reads: {json.dumps(_jsonable(rec['plan']))}")
        for k, ep in enumerate(rec.get("episode_list", [])):
            print(f"  episode {k}: {ep['frames']} frames")
        print(f"episodes: {rec['episodes']}, training frames: {rec['frames']}")
        for prob in rec["problems"]:
            print(f"  PROBLEM: {prob}")
        print()
    t = report["totals"]
    print(
        f"total: {t['recordings']} recordings, {t['episodes']} episodes, {t['frames']} frames, "
        f"{t['problems']} problems"
    )


def run(args: argparse.Namespace) -> int:
    from diffusion_controller.data.inspector import inspect
    from diffusion_controller.data.spec import load_spec

    try:
        spec = load_spec(args.spec)
        report = inspect(args.dir, spec, args.action_dt, args.joints, args.cameras)
    except (ValueError, FileNotFoundError) as exc:
        print(f"data inspect: {exc}", file=sys.stderr)
        return 2
    if args.json == "-":
        json.dump(_jsonable(report), sys.stdout, indent=2)
        print()
    else:
        _print_text(report)
        if args.json:
            write_json(args.json, report)
    unusable = any(
        p.startswith("training cannot use it") or "lacks topics" in p
        for r in report["recordings"]
        for p in r["problems"]
    )
    return 1 if unusable or not report["recordings"] else 0
