"""rosbag2 demonstrations (MCAP or sqlite3): read them into Episodes; writing is in bag_writer.

Reading (`read_episodes`, `read_episode`) works the same for real recordings and for those of
`diffusion-controller record`; a DataSpec (data/spec.py) says which topics to use:

- Joints are matched by name from each JointState; messages lacking a requested joint, with a
  short position array or with non-finite positions are skipped (and counted in the meta).
- Actions come from one of three sources. `commands`: Float64MultiArray carrying no names, taken
  to be in `joint_names` order as the forward position controller's `joints` parameter orders
  them (messages of another length or non-finite are skipped). `trajectory`: JointTrajectory,
  each message's first point matched by joint name, timed at its header stamp (receive time if
  the stamp is zero) plus the point's time_from_start. `measured`: the joint states themselves,
  `lead_s` ahead, for kinesthetic or teleoperated demonstrations. With `lead_s` the action at
  grid time t is the source's value at t + lead_s.
- A gripper (spec `gripper`): its joints are read from the same joint states and mapped to the
  gripper's dims (data/gripper.py, e.g. the width), its actions from its own command topic (or
  trajectory, or measured) with the same lead; they become the last columns of the Episode.
- Images are sensor_msgs/Image or CompressedImage (jpeg/png), detected per topic (data/images).
- Times follow data/align: header stamps where a message has them, receive time where not; a
  clock disagreement beyond the spec's tolerance is an error naming the two topics; stamps on
  another clock entirely fall back to receive times with a warning.
- Everything is resampled onto a uniform grid of spacing `action_dt` from the first time every
  stream has a message to the last action: joint positions interpolated linearly, commands and
  images the newest at or before each grid time. Only the frames the grid uses are decoded.
- Episodes: the whole bag is one, or (spec `episodes.split: marker`) each window opened by a
  message on the marker topic is one (std_msgs/Bool: True opens, False closes).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.data import align
from diffusion_controller.data.bag_collect import Collected, Plan, check_topics, collect, plan_for
from diffusion_controller.data.bag_writer import (  # noqa: F401  (re-exported: the public API)
    BOOL,
    DEFAULT_CAMERAS,
    DEFAULT_TOPICS,
    FLOAT64_ARRAY,
    JOINT_STATE,
    STRING,
    TRAJECTORY,
    BagWriter,
    typestore,
)
from diffusion_controller.data.episode import Episode
from diffusion_controller.data.images import COMPRESSED, IMAGE, decode
from diffusion_controller.data.spec import DataSpec

_NS = align.NS


def _is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def is_bag_dir(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a complete rosbag2 directory (has its metadata.yaml)."""
    return _is_bag(Path(path))


def read_episode(
    bag_dir: str | os.PathLike[str],
    action_dt: float,
    joint_names: Sequence[str],
    cameras: Mapping[str, str] | None = None,
    image_size: Sequence[int] | None = None,
    *,
    joint_topic: str = DEFAULT_TOPICS["joint_states"],
    command_topic: str = DEFAULT_TOPICS["commands"],
    task_topic: str = DEFAULT_TOPICS["task"],
    spec: DataSpec | None = None,
) -> Episode:
    """One rosbag2 recording -> an Episode (a bag that a marker splits: use read_episodes)."""
    eps = read_episodes(
        bag_dir,
        action_dt,
        joint_names,
        cameras,
        image_size,
        joint_topic=joint_topic,
        command_topic=command_topic,
        task_topic=task_topic,
        spec=spec,
    )
    if len(eps) != 1:
        raise ValueError(f"{bag_dir} holds {len(eps)} episodes; read it with read_episodes")
    return eps[0]


def read_episodes(
    bag_dir: str | os.PathLike[str],
    action_dt: float,
    joint_names: Sequence[str],
    cameras: Mapping[str, str] | None = None,
    image_size: Sequence[int] | None = None,
    *,
    joint_topic: str = DEFAULT_TOPICS["joint_states"],
    command_topic: str = DEFAULT_TOPICS["commands"],
    task_topic: str = DEFAULT_TOPICS["task"],
    spec: DataSpec | None = None,
) -> list[Episode]:
    """A rosbag2 recording -> its Episodes on a uniform `action_dt` grid (see the module doc).

    `cameras` maps the Episode's camera names to image topics (the spec's `cameras` win);
    `image_size` = (H, W) resizes. Raises ValueError with the reason for a missing or empty bag,
    missing topics, unknown joints, disagreeing clocks, or streams that never overlap.
    """
    from rosbags.rosbag2 import Reader

    from diffusion_controller.data.pixels import resize_image, to_rgb

    path = Path(bag_dir)
    if not path.is_dir() or not _is_bag(path):
        raise ValueError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    if not (action_dt > 0 and np.isfinite(action_dt)):
        raise ValueError(f"action_dt must be positive, got {action_dt}")
    names = list(joint_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"joint_names must be non-empty and unique, got {names}")
    if image_size is not None and (len(image_size) != 2 or min(int(v) for v in image_size) < 1):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    plan = plan_for(spec, action_dt, cameras, joint_topic, command_topic, task_topic)
    ts = typestore()
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for corrupt metadata or storage
        raise ValueError(f"cannot open bag {path}: {exc}") from exc
    try:
        if reader.message_count == 0:
            raise ValueError(f"bag {path} contains no messages")
        types = {c.topic: c.msgtype for c in reader.connections}
        problems = check_topics(plan, types, str(path))
        if problems:
            raise ValueError(problems[0])
        got = collect(reader, ts, plan, names)
        _check_streams(got, plan, names, path)
        arm = len(names)
        clock = align.choose_clock([*got.aligned(), *([got.marker] if got.marker else [])])
        if clock == "received":
            warnings.warn(
                f"{path}: header stamps are not on the recording clock; aligning by receive time",
                stacklevel=2,
            )
        align.check_clocks(got.aligned(), clock, plan.tolerance_s, str(path))
        windows, grids = _grids(got, plan, clock, action_dt, path)
        jt, jq = align.sorted_series(got.joints, clock, np.array(got.joints.values))
        if got.action is None:
            at, aq = jt, jq
        else:
            at, aq = align.sorted_series(got.action, clock, np.array(got.action.values))
        if got.gripper is not None:
            gt, gq = align.sorted_series(got.gripper, clock, np.array(got.gripper.values))
        lead = round(plan.lead_s * _NS)
        img_t, img_i = {}, {}
        for cam, stream in got.images.items():
            img_t[cam], img_i[cam] = align.sorted_series(stream, clock, np.array(stream.values))
        needed = [
            {cam: img_i[cam][align.newest(grid, img_t[cam])] for cam in plan.cameras}
            for grid in grids
        ]
        frames = _decode_frames(
            reader, types, plan.cameras, needed, image_size, ts, to_rgb, resize_image
        )
        base_meta = _meta(got, plan, clock, path, jt, at, img_t)
        episodes = []
        for k, (grid, (w0, w1)) in enumerate(zip(grids, windows, strict=False)):
            start = int(grid[0])
            if got.action is None:
                actions = align.interp(grid + lead, jt, jq)[:, :arm]
            else:
                actions = aq[align.newest(grid + lead, at)]
            joints = align.interp(grid, jt, jq)
            columns = names
            if plan.gripper is not None:  # arm joints, then the gripper's dims
                g = plan.gripper.config
                if got.gripper is None:  # measured
                    g_act = align.interp(grid + lead, jt, jq)[:, arm:]
                else:
                    g_act = gq[align.newest(grid + lead, gt)]
                joints = np.concatenate([joints[:, :arm], g.to_dims(joints[:, arm:])], axis=1)
                actions = np.concatenate([actions, g.to_dims(g_act)], axis=1)
                columns = [*names, *g.dim_names]
            meta = dict(base_meta, t0=start / _NS)
            if plan.marker_topic:
                meta["episode"] = {"index": k, "window_s": [w0 / _NS, w1 / _NS]}
            episodes.append(
                Episode(
                    joint_names=columns,
                    stamps=(grid - start) / _NS,
                    joints=joints,
                    actions=actions,
                    images={cam: np.stack(frames[k][cam]) for cam in plan.cameras},
                    meta=meta,
                )
            )
        return episodes
    except ValueError:
        raise
    except Exception as exc:  # storage-level damage surfaces as many exception types
        raise ValueError(f"cannot read bag {path}: {exc!r}") from exc
    finally:
        reader.close()


def _check_streams(got: Collected, plan: Plan, names: Sequence[str], path: Path) -> None:
    if not got.joints.values:
        unknown = [n for n in plan.joint_names(names) if n not in got.seen_names]
        if got.seen_names and unknown:
            raise ValueError(
                f"joints {unknown} not found in {plan.joint_topic} of {path} "
                f"(it names {sorted(got.seen_names)})"
            )
        raise ValueError(f"no usable {plan.joint_topic} messages in {path}")
    if got.action is not None and not got.action.values:
        what = (
            f"expected {len(names)} finite values each"
            if plan.source == "commands"
            else f"expected a first point naming {list(names)}"
        )
        raise ValueError(
            f"no usable {plan.action_topic} messages in {path} "
            f"({what}; {got.action.skipped} skipped)"
        )
    if got.gripper is not None and not got.gripper.values:
        assert plan.gripper is not None
        raise ValueError(
            f"no usable gripper {plan.gripper.source} on {plan.gripper_topic} in {path} "
            f"(expected {len(plan.gripper.joints)} finite values each, or a first point naming "
            f"{list(plan.gripper.joints)}; {got.gripper.skipped} skipped)"
        )
    for cam, stream in got.images.items():
        if not stream.header:
            raise ValueError(f"no images on {plan.cameras[cam]} in {path}")
    if got.marker is not None and not got.marker.values:
        raise ValueError(f"no episode markers on {plan.marker_topic} in {path}")


def _grids(
    got: Collected, plan: Plan, clock: str, action_dt: float, path: Path
) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """Episode windows and their grids; an empty grid is an error (bag) or dropped (marker)."""
    lead = round(plan.lead_s * _NS)
    jt = np.sort(got.joints.times(clock))
    at = jt if got.action is None else np.sort(got.action.times(clock))
    firsts = [jt[0], at[0] - lead, *(np.min(s.times(clock)) for s in got.images.values())]
    if got.gripper is not None:  # no grid time before the first gripper command
        firsts.append(np.min(got.gripper.times(clock)) - lead)
    start, end = int(max(firsts)), int(at[-1] - lead)
    step = round(action_dt * _NS)
    if got.marker is None:
        grid = align.grid_between(start, end, step)
        if not len(grid):
            raise ValueError(
                f"streams in {path} never overlap: all exist from {start / _NS:.3f} s but the "
                f"last {'joint state' if got.action is None else 'action'} usable is at "
                f"{end / _NS:.3f} s"
            )
        return [(start, end)], [grid]
    mt = got.marker.times(clock)
    windows, grids = [], []
    for w0, w1 in align.segments(mt, got.marker.values, end):
        grid = align.grid_between(max(w0, start), min(w1 - 1, end), step)
        if len(grid):
            windows.append((w0, w1))
            grids.append(grid)
    if not grids:
        raise ValueError(f"no episode window on {plan.marker_topic} in {path} overlaps the data")
    return windows, grids


def _meta(
    got: Collected,
    plan: Plan,
    clock: str,
    path: Path,
    jt: np.ndarray,
    at: np.ndarray,
    img_t: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    skipped = {"joint_states": got.joints.skipped}
    rates = {"joint_states": align.rate_hz(jt)}
    if got.action is not None:
        skipped[plan.source] = got.action.skipped
        rates[plan.source] = align.rate_hz(at)
    if got.gripper is not None:
        skipped["gripper"] = got.gripper.skipped
        rates["gripper"] = align.rate_hz(np.sort(got.gripper.times(clock)))
    skipped.update({f"images.{cam}": s.skipped for cam, s in got.images.items()})
    rates.update({f"images.{cam}": align.rate_hz(t) for cam, t in img_t.items()})
    meta: dict[str, Any] = {
        "source": str(path),
        "stamp_source": clock,
        "action_source": plan.source,
        "action_topic": plan.action_topic,
        "lead_s": plan.lead_s,
        "clock_offsets_s": align.clock_offsets(got.aligned(), clock),
        "skipped": skipped,
        "rates_hz": rates,
    }
    if plan.gripper is not None:
        meta["gripper"] = plan.gripper.config.to_dict()
        meta["gripper_source"] = plan.gripper.source
        meta["gripper_topic"] = plan.gripper_topic
    if got.task_texts:
        try:
            meta["task"] = json.loads(got.task_texts[-1])
        except json.JSONDecodeError as exc:
            meta["task_error"] = f"{plan.task_topic} is not JSON: {exc}"
    return meta


def _decode_frames(
    reader: Any,
    types: Mapping[str, str],
    cams: Mapping[str, str],
    needed: Sequence[Mapping[str, np.ndarray]],
    image_size: Sequence[int] | None,
    ts: Any,
    to_rgb: Any,
    resize_image: Any,
) -> list[dict[str, list[np.ndarray]]]:
    """Second pass over the image topics, decoding only the frames that the grids use."""
    out: list[dict[str, list[np.ndarray]]] = [{} for _ in needed]
    conns = {c.topic: c for c in reader.connections}
    for cam, topic in cams.items():
        unique = set(int(i) for want in needed for i in want[cam])
        msgtype = types[topic]
        decoded: dict[int, np.ndarray] = {}
        ordinal = -1
        for _, _, raw in reader.messages(connections=[conns[topic]]):
            ordinal += 1
            if ordinal not in unique:
                continue
            msg = ts.deserialize_cdr(raw, msgtype)
            decoded[ordinal] = decode(msg, msgtype, topic, to_rgb, resize_image, image_size)
            if len(decoded) == len(unique):
                break
        shapes = {img.shape for img in decoded.values()}
        if len(shapes) > 1:
            raise ValueError(
                f"{topic}: frames change size within the recording {sorted(shapes)}; "
                "pass image_size to resize them to one size"
            )
        for k, want in enumerate(needed):
            out[k][cam] = [decoded[int(i)] for i in want[cam]]
    return out


def read_task_messages(
    bag_dir: str | os.PathLike[str], task_topic: str = DEFAULT_TOPICS["task"]
) -> list[str]:
    """Every std_msgs/String payload on `task_topic`, in recording order ([] without the topic)."""
    from rosbags.rosbag2 import Reader

    path = Path(bag_dir)
    if not _is_bag(path):
        raise ValueError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    ts = typestore()
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == task_topic and c.msgtype == STRING]
        return [str(ts.deserialize_cdr(raw, STRING).data) for _, _, raw in reader.messages(conns)]


__all__ = [
    "COMPRESSED",
    "DEFAULT_CAMERAS",
    "DEFAULT_TOPICS",
    "IMAGE",
    "BagWriter",
    "is_bag_dir",
    "read_episode",
    "read_episodes",
    "read_task_messages",
    "typestore",
]
