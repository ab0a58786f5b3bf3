"""What a recording holds and what training would make of it: the report of `data inspect`.

For each rosbag2 recording: storage, every topic with its type, message count, rate, duration
and clock offset (median header stamp minus receive time), the offsets between the streams the
spec uses and the worst pair against the tolerance, the episodes found and the frames a training
run would use (by running the very reader training runs), and a list of problems: missing
topics, wrong types, skipped messages, streams slower than the action grid, gaps, disagreeing
clocks. For a LeRobot dataset: fps, features, episodes and frames, and the same problem list.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.data import align
from diffusion_controller.data.loading import camera_topics, discover
from diffusion_controller.data.spec import DataSpec
from diffusion_controller.settings.panda import PANDA_JOINT_NAMES

PANDA_JOINTS = list(PANDA_JOINT_NAMES)  # the joint_names setting's default
GAP_FACTOR = 5.0  # a silence this many median periods long is reported as a gap
_NS = align.NS


def _topic_row(topic: str, msgtype: str, head: list[int], recv: list[int]) -> dict[str, Any]:
    r = np.asarray(recv, dtype=np.int64)
    h = np.asarray(head, dtype=np.int64)
    stamped = len(h) == len(r) and len(h) > 0 and bool(np.all(h != 0))
    t = np.sort(h if stamped else r)
    period = float(np.median(np.diff(t))) / _NS if len(t) > 2 else 0.0
    gap = float(np.max(np.diff(t))) / _NS if len(t) > 1 else 0.0
    return {
        "topic": topic,
        "type": msgtype,
        "count": len(r),
        "rate_hz": align.rate_hz(t),
        "duration_s": float(t[-1] - t[0]) / _NS if len(t) > 1 else 0.0,
        "stamped": stamped,
        "clock_offset_ms": float(np.median(h - r)) / 1e6 if stamped else None,
        "max_gap_s": gap,
        "median_period_s": period,
    }


def scan_bag(path: Path) -> dict[str, Any]:
    """Topics of one bag with counts, rates and clock offsets (every message deserialised once
    for its header; types the Humble type store lacks are timed by receive time)."""
    from rosbags.rosbag2 import Reader

    from diffusion_controller.data.rosbag_io import typestore

    ts = typestore()
    with Reader(path) as reader:
        files = {f.suffix for f in Path(path).iterdir()}
        heads: dict[str, list[int]] = {}
        recvs: dict[str, list[int]] = {}
        types = {c.topic: c.msgtype for c in reader.connections}
        first_names: dict[str, list[str]] = {}
        for conn, t_recv, raw in reader.messages():
            recvs.setdefault(conn.topic, []).append(int(t_recv))
            stamp = 0
            cls = ts.types.get(conn.msgtype)
            if cls is not None and "header" in getattr(cls, "__dataclass_fields__", {}):
                try:
                    msg = ts.deserialize_cdr(raw, conn.msgtype)
                    stamp = int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec)
                    if conn.msgtype == "sensor_msgs/msg/JointState":
                        first_names.setdefault(conn.topic, list(msg.name))
                except Exception:  # a corrupt message is counted by its receive time only
                    stamp = 0
            heads.setdefault(conn.topic, []).append(stamp)
        rows = [_topic_row(t, types[t], heads.get(t, []), recvs.get(t, [])) for t in sorted(types)]
        return {
            "storage": "sqlite3" if ".db3" in files else ("mcap" if ".mcap" in files else "?"),
            "duration_s": reader.duration / _NS if reader.message_count else 0.0,
            "message_count": int(reader.message_count),
            "topics": rows,
            "joint_names_seen": first_names,
        }


def _default_joints(scan: dict[str, Any], joint_topic: str) -> tuple[list[str], str | None]:
    seen = scan["joint_names_seen"].get(joint_topic, [])
    if not seen or all(n in seen for n in PANDA_JOINTS):
        return PANDA_JOINTS, None
    arm = [n for n in seen if "finger" not in n and "gripper" not in n]
    return arm, (
        f"train's default joints panda_joint1..7 are not on {joint_topic}: pass "
        f"--joints {' '.join(arm)} to train"
    )


def inspect_bag(
    path: str,
    spec: DataSpec,
    action_dt: float,
    joint_names: Sequence[str] | None,
    cameras: Sequence[str] | None,
) -> dict[str, Any]:
    from diffusion_controller.data.bag_collect import check_topics, plan_for
    from diffusion_controller.data.rosbag_io import read_episodes

    report: dict[str, Any] = {"kind": "rosbag2", "path": path, "problems": []}
    problems: list[str] = report["problems"]
    try:
        scan = scan_bag(Path(path))
    except Exception as exc:  # corrupt storage: report it, do not crash the inspector
        problems.append(f"cannot read {path}: {exc!r}")
        return {**report, "episodes": 0, "frames": 0}
    report.update({k: v for k, v in scan.items() if k != "joint_names_seen"})
    plan = plan_for(spec, action_dt, camera_topics(cameras) if cameras else None)
    types = {r["topic"]: r["type"] for r in scan["topics"]}
    problems.extend(check_topics(plan, types, path))
    names, note = (
        (list(joint_names), None) if joint_names else _default_joints(scan, plan.joint_topic)
    )
    if note:
        problems.append(note)
    by_topic = {r["topic"]: r for r in scan["topics"]}
    used = [plan.joint_topic, *plan.cameras.values()]
    if plan.source != "measured":
        used.insert(1, plan.action_topic)
    for topic in used:
        row = by_topic.get(topic)
        if row is None:
            continue
        if 0 < row["rate_hz"] < 1.0 / action_dt * 0.999:
            problems.append(
                f"{topic} runs at {row['rate_hz']:.1f} Hz, slower than the {1 / action_dt:.1f} Hz "
                "action grid: grid steps will repeat its messages"
            )
        if row["median_period_s"] > 0 and row["max_gap_s"] > GAP_FACTOR * row["median_period_s"]:
            problems.append(f"{topic} has a gap of {row['max_gap_s']:.3f} s")
    offsets = {t: (by_topic[t]["clock_offset_ms"] or 0.0) / 1e3 for t in used if t in by_topic}
    a, b, diff = align.worst_pair(offsets)
    report["clock"] = {
        "offsets_ms": {t: v * 1e3 for t, v in offsets.items()},
        "worst_pair": [a, b],
        "worst_diff_ms": diff * 1e3,
        "tolerance_ms": plan.tolerance_s * 1e3,
    }
    report["plan"] = {
        "joint_topic": plan.joint_topic,
        "action": {"source": plan.source, "topic": plan.action_topic, "lead_s": plan.lead_s},
        "cameras": plan.cameras,
        "marker_topic": plan.marker_topic,
        "joints": names,
        "action_dt": action_dt,
    }
    episodes: list[dict[str, Any]] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            eps = read_episodes(path, action_dt, names, spec=spec, cameras=plan.cameras)
        problems.extend(str(w.message) for w in caught)
        for ep in eps:
            episodes.append(
                {
                    "frames": len(ep),
                    "duration_s": len(ep) * action_dt,
                    "t0": ep.meta.get("t0"),
                    "cameras": {c: list(v.shape[1:]) for c, v in ep.images.items()},
                }
            )
        for k, v in (eps[0].meta.get("skipped", {}) if eps else {}).items():
            if v:
                problems.append(f"{v} unusable messages skipped on {k}")
    except ValueError as exc:
        problems.append(f"training cannot use it: {exc}")
    report["episode_list"] = episodes
    report["episodes"] = len(episodes)
    report["frames"] = sum(e["frames"] for e in episodes)
    return report


def inspect_lerobot(
    path: str,
    spec: DataSpec,
    action_dt: float | None,
    joint_names: Sequence[str] | None,
    cameras: Sequence[str] | None,
) -> dict[str, Any]:
    from diffusion_controller.data import lerobot

    report: dict[str, Any] = {"kind": "lerobot", "path": path, "problems": []}
    problems: list[str] = report["problems"]
    try:
        info = lerobot.read_info(path)
    except ValueError as exc:
        problems.append(str(exc))
        return {**report, "episodes": 0, "frames": 0}
    dt = action_dt or 1.0 / float(info["fps"])
    report.update(
        {
            "format": info.get("codebase_version"),
            "fps": info["fps"],
            "robot_type": info.get("robot_type"),
            "features": {
                k: {"dtype": f.get("dtype"), "shape": f.get("shape"), "names": f.get("names")}
                for k, f in info["features"].items()
            },
            "declared": {
                "episodes": info.get("total_episodes"),
                "frames": info.get("total_frames"),
            },
        }
    )
    try:
        rows = lerobot.episodes_table(path)
        if info.get("total_episodes") is not None and len(rows) != int(info["total_episodes"]):
            problems.append(
                f"info.json declares {info['total_episodes']} episodes, "
                f"meta/episodes has {len(rows)}"
            )
        state, action, cams = lerobot.plan_features(info, spec, cameras, path)
        report["plan"] = {"state": state, "action": action, "cameras": cams, "action_dt": dt}
        eps = lerobot.read_lerobot(path, dt, joint_names, cameras, spec)
        report["episode_list"] = [
            {
                "episode_index": e.meta["episode_index"],
                "frames": len(e),
                "task": e.meta["task_text"],
            }
            for e in eps
        ]
    except ValueError as exc:
        problems.append(f"training cannot use it: {exc}")
        report["episode_list"] = []
    report["episodes"] = len(report["episode_list"])
    report["frames"] = sum(e["frames"] for e in report["episode_list"])
    return report


def inspect(
    path: str | os.PathLike[str],
    spec: DataSpec | None = None,
    action_dt: float | None = None,
    joint_names: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole report for every recording under `path` (see the module doc)."""
    spec = spec or DataSpec()
    items = discover(path)
    recordings = []
    for kind, item in items:
        if kind == "bag":
            recordings.append(inspect_bag(item, spec, action_dt or 0.1, joint_names, cameras))
        elif kind == "lerobot":
            recordings.append(inspect_lerobot(item, spec, action_dt, joint_names, cameras))
        else:
            recordings.append(
                {"kind": "npz", "path": item, "episodes": 1, "frames": None, "problems": []}
            )
    problems = [p for r in recordings for p in r["problems"]]
    if not recordings:
        problems.append(f"no recordings (rosbag2, LeRobot, .npz) under {os.fspath(path)}")
    return {
        "path": os.fspath(path),
        "spec": spec.to_dict(),
        "spec_file": spec.path,
        "recordings": recordings,
        "totals": {
            "recordings": len(recordings),
            "episodes": sum(r["episodes"] for r in recordings),
            "frames": sum(r["frames"] or 0 for r in recordings),
            "problems": len(problems),
        },
        "problems": problems,
    }
