"""rosbag2 (MCAP) demonstrations: write them like a real robot would, read them into an Episode.

Writing uses the `rosbags` library (no ROS install needed) with the ROS 2 Humble type store, so a
recording made by `diffusion-controller record` has exactly the topics and message types a real arm
records: sensor_msgs/msg/Image on the camera topic, sensor_msgs/msg/JointState on /joint_states,
std_msgs/msg/Float64MultiArray on /forward_position_controller/commands, and std_msgs/msg/String
(JSON task description) on /sim/task. rosbags writes metadata version 8, which Humble's own
`ros2 bag` may warn about; rosbags itself (and hence `read_episode`) reads every version.

Reading (`read_episode`) works the same for real recordings:

- Joints are matched by name from each JointState; messages lacking a requested joint, with a
  short position array or with non-finite positions are skipped (and counted in the meta).
- Commands (Float64MultiArray) carry no names: their values are taken to be in `joint_names`
  order, as the forward position controller's `joints` parameter orders them; messages of another
  length or with non-finite values are skipped.
- Images are converted with diffusion_controller.policy.preprocess (`to_rgb`, `resize_image`).
- Times are header stamps for joint states and images and the bag's receive time for commands
  (they have no header). If the header stamps are not on the recording's clock (for example sim
  time recorded against wall time) every stream falls back to receive times, with a warning.
- Everything is resampled onto a uniform grid of spacing `action_dt` from the first time every
  stream has a message to the last command: joint positions interpolated linearly, commands and
  images the newest at or before each grid time. Only the frames the grid uses are decoded, so
  long high-resolution recordings stay cheap in memory.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.data.episode import Episode

IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"

DEFAULT_TOPICS = {
    "joint_states": "/joint_states",
    "commands": "/forward_position_controller/commands",
    "task": "/sim/task",
}
DEFAULT_CAMERAS = {"camera": "/camera/image_raw"}
_NS = 1_000_000_000


@lru_cache(maxsize=1)
def typestore() -> Any:
    """The ROS 2 Humble message definitions (the target distro), built once per process."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _stamp(ts: Any, t_ns: int) -> Any:
    return ts.types["builtin_interfaces/msg/Time"](sec=int(t_ns // _NS), nanosec=int(t_ns % _NS))


def _header(ts: Any, t_ns: int, frame_id: str) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_stamp(ts, t_ns), frame_id=frame_id)


class BagWriter:
    """Writes one rosbag2 directory (MCAP storage) with the topics of a recorded demonstration.

    Times are integer nanoseconds. A message's bag (receive) time equals its header stamp, as if
    recorded on the robot's clock with no transport delay, unless `received_ns` says otherwise.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cameras: Mapping[str, str] | None = None,
        joint_topic: str = DEFAULT_TOPICS["joint_states"],
        command_topic: str = DEFAULT_TOPICS["commands"],
        task_topic: str | None = DEFAULT_TOPICS["task"],
    ) -> None:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
        from rosbags.interfaces import QosTime as _T
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.ts = typestore()
        self.path = Path(path)
        self._writer = Writer(self.path, version=8, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        never = _T(sec=0, nsec=0)

        def qos(durability: QosDurability, reliability: QosReliability) -> list[Qos]:
            return [
                Qos(
                    QosHistory.KEEP_LAST,
                    1,
                    reliability,
                    durability,
                    never,
                    never,
                    QosLiveliness.AUTOMATIC,
                    never,
                    False,
                )
            ]

        sensor = qos(QosDurability.VOLATILE, QosReliability.BEST_EFFORT)
        reliable = qos(QosDurability.VOLATILE, QosReliability.RELIABLE)
        latched = qos(QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE)
        add = self._writer.add_connection
        self._cams = {
            name: add(topic, IMAGE, typestore=self.ts, offered_qos_profiles=sensor)
            for name, topic in (cameras or DEFAULT_CAMERAS).items()
        }
        self._joints = add(joint_topic, JOINT_STATE, typestore=self.ts, offered_qos_profiles=sensor)
        self._cmds = add(
            command_topic, FLOAT64_ARRAY, typestore=self.ts, offered_qos_profiles=reliable
        )
        self._task = (
            add(task_topic, STRING, typestore=self.ts, offered_qos_profiles=latched)
            if task_topic
            else None
        )
        self.counts: dict[str, int] = {"images": 0, "joint_states": 0, "commands": 0, "task": 0}

    def _write(self, conn: Any, t_ns: int, msg: Any, kind: str, received_ns: int | None) -> None:
        t = int(t_ns if received_ns is None else received_ns)
        self._writer.write(conn, t, self.ts.serialize_cdr(msg, msg.__msgtype__))
        self.counts[kind] += 1

    def joint_state(
        self,
        t_ns: int,
        names: Sequence[str],
        position: np.ndarray,
        velocity: np.ndarray | None = None,
        effort: np.ndarray | None = None,
        received_ns: int | None = None,
    ) -> None:
        msg = self.ts.types[JOINT_STATE](
            header=_header(self.ts, t_ns, ""),
            name=list(names),
            position=np.asarray(position, dtype=np.float64),
            velocity=np.asarray([] if velocity is None else velocity, dtype=np.float64),
            effort=np.asarray([] if effort is None else effort, dtype=np.float64),
        )
        self._write(self._joints, t_ns, msg, "joint_states", received_ns)

    def image(
        self,
        t_ns: int,
        pixels: np.ndarray,
        encoding: str = "rgb8",
        camera: str | None = None,
        frame_id: str = "camera_optical_frame",
        step: int | None = None,
        received_ns: int | None = None,
    ) -> None:
        """`pixels` uint8 [H, W(, C)] already in `encoding`; `step` > W*C pads each row."""
        arr = np.ascontiguousarray(pixels, dtype=np.uint8)
        h, w = arr.shape[:2]
        rows = arr.reshape(h, -1)
        row_bytes = rows.shape[1] if step is None else int(step)
        if row_bytes < rows.shape[1]:
            raise ValueError(f"step {row_bytes} is shorter than a row ({rows.shape[1]} bytes)")
        if row_bytes > rows.shape[1]:
            rows = np.concatenate(
                [rows, np.zeros((h, row_bytes - rows.shape[1]), dtype=np.uint8)], axis=1
            )
        msg = self.ts.types[IMAGE](
            header=_header(self.ts, t_ns, frame_id),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=row_bytes,
            data=rows.reshape(-1),
        )
        conn = self._cams[camera] if camera is not None else next(iter(self._cams.values()))
        self._write(conn, t_ns, msg, "images", received_ns)

    def command(self, t_ns: int, positions: np.ndarray) -> None:
        """A command has no header: `t_ns` is its receive time in the bag."""
        layout = self.ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        msg = self.ts.types[FLOAT64_ARRAY](
            layout=layout, data=np.asarray(positions, dtype=np.float64)
        )
        self._write(self._cmds, t_ns, msg, "commands", None)

    def task(self, t_ns: int, text: str) -> None:
        if self._task is None:
            raise ValueError("this writer was opened without a task topic")
        self._write(self._task, t_ns, self.ts.types[STRING](data=text), "task", None)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Stream:
    """Messages of one topic: header (or receive) times in ns, and the values kept from them."""

    header: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    skipped: int = 0


def _is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


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
) -> Episode:
    """One rosbag2 recording -> an Episode on a uniform `action_dt` grid (see the module doc).

    `cameras` maps the Episode's camera names to image topics; `image_size` = (H, W) resizes.
    Raises ValueError with the reason for a missing or empty bag, missing topics, unknown joints,
    or streams that never overlap.
    """
    from rosbags.rosbag2 import Reader

    from diffusion_controller.policy.preprocess import resize_image, to_rgb

    path = Path(bag_dir)
    if not path.is_dir() or not _is_bag(path):
        raise ValueError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    if not (action_dt > 0 and np.isfinite(action_dt)):
        raise ValueError(f"action_dt must be positive, got {action_dt}")
    names = list(joint_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"joint_names must be non-empty and unique, got {names}")
    cams = dict(DEFAULT_CAMERAS if cameras is None else cameras)
    if image_size is not None and (len(image_size) != 2 or min(int(v) for v in image_size) < 1):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    ts = typestore()
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for corrupt metadata or storage
        raise ValueError(f"cannot open bag {path}: {exc}") from exc
    try:
        topics = {c.topic: c for c in reader.connections}
        if reader.message_count == 0:
            raise ValueError(f"bag {path} contains no messages")
        required = {joint_topic: JOINT_STATE, command_topic: FLOAT64_ARRAY}
        required.update({topic: IMAGE for topic in cams.values()})
        missing = [t for t in required if t not in topics]
        if missing:
            raise ValueError(f"bag {path} lacks topics {missing}; it has {sorted(topics)}")
        for topic, msgtype in required.items():
            if topics[topic].msgtype != msgtype:
                raise ValueError(
                    f"{topic} in {path} is {topics[topic].msgtype}, expected {msgtype}"
                )

        joints, commands = _Stream(), _Stream()
        images = {cam: _Stream() for cam in cams}
        cam_of_topic = {topic: cam for cam, topic in cams.items()}
        task_texts: list[str] = []
        seen_names: set[str] = set()
        wanted = [c for c in reader.connections if c.topic in required or c.topic == task_topic]
        for conn, t_recv, raw in reader.messages(connections=wanted):
            try:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
            except Exception:  # a corrupt message must not sink the whole recording
                _stream_for(
                    conn.topic, joint_topic, command_topic, joints, commands, images, cam_of_topic
                ).skipped += 1
                continue
            if conn.topic == joint_topic:
                seen_names.update(msg.name)
                q = _joint_positions(msg, names)
                if q is None:
                    joints.skipped += 1
                    continue
                joints.header.append(_ns(msg.header.stamp))
                joints.received.append(t_recv)
                joints.values.append(q)
            elif conn.topic == command_topic:
                data = np.asarray(msg.data, dtype=np.float64)
                if data.shape != (len(names),) or not np.all(np.isfinite(data)):
                    commands.skipped += 1
                    continue
                commands.header.append(t_recv)
                commands.received.append(t_recv)
                commands.values.append(data)
            elif conn.topic in cam_of_topic:
                stream = images[cam_of_topic[conn.topic]]
                stream.header.append(_ns(msg.header.stamp))
                stream.received.append(t_recv)
                stream.values.append(len(stream.values))  # ordinal among this topic's messages
            elif conn.topic == task_topic:
                task_texts.append(str(msg.data))

        if not joints.values:
            unknown = [n for n in names if n not in seen_names]
            if seen_names and unknown:
                raise ValueError(
                    f"joints {unknown} not found in {joint_topic} of {path} "
                    f"(it names {sorted(seen_names)})"
                )
            raise ValueError(f"no usable {joint_topic} messages in {path}")
        if not commands.values:
            raise ValueError(
                f"no usable {command_topic} messages in {path} "
                f"(expected {len(names)} finite values each; {commands.skipped} skipped)"
            )
        for cam, stream in images.items():
            if not stream.header:
                raise ValueError(f"no images on {cams[cam]} in {path}")

        source = _choose_clock(joints, images)
        if source == "received":
            warnings.warn(
                f"{path}: header stamps are not on the recording clock; aligning by receive time",
                stacklevel=2,
            )
        jt, jq = _sorted(joints, source, np.array(joints.values))
        ct, cq = _sorted(commands, "header", np.array(commands.values))
        img_t = {}
        img_i = {}
        for cam, stream in images.items():
            img_t[cam], img_i[cam] = _sorted(stream, source, np.array(stream.values))
        start = max([jt[0], ct[0], *(t[0] for t in img_t.values())])
        end = ct[-1]
        if end < start:
            raise ValueError(
                f"streams in {path} never overlap: all exist from {start / _NS:.3f} s but the "
                f"last command is at {end / _NS:.3f} s"
            )
        step = round(action_dt * _NS)
        grid = start + step * np.arange((end - start) // step + 1, dtype=np.int64)
        joint_grid = np.stack(
            [np.interp(grid - start, jt - start, jq[:, k]) for k in range(len(names))], axis=1
        )
        action_grid = cq[np.searchsorted(ct, grid, side="right") - 1]
        needed: dict[str, np.ndarray] = {}
        for cam in cams:
            needed[cam] = img_i[cam][np.searchsorted(img_t[cam], grid, side="right") - 1]
        frames = _decode_frames(reader, topics, cams, needed, image_size, ts, to_rgb, resize_image)
        meta: dict[str, Any] = {
            "source": str(path),
            "t0": start / _NS,
            "stamp_source": source,
            "skipped": {
                "joint_states": joints.skipped,
                "commands": commands.skipped,
                **{f"images.{cam}": s.skipped for cam, s in images.items()},
            },
            "rates_hz": {
                "joint_states": _rate(jt),
                "commands": _rate(ct),
                **{f"images.{cam}": _rate(t) for cam, t in img_t.items()},
            },
        }
        if task_texts:
            try:
                meta["task"] = json.loads(task_texts[-1])
            except json.JSONDecodeError as exc:
                meta["task_error"] = f"{task_topic} is not JSON: {exc}"
        return Episode(
            joint_names=names,
            stamps=(grid - start) / _NS,
            joints=joint_grid,
            actions=action_grid,
            images=frames,
            meta=meta,
        )
    except ValueError:
        raise
    except Exception as exc:  # storage-level damage surfaces as many exception types
        raise ValueError(f"cannot read bag {path}: {exc!r}") from exc
    finally:
        reader.close()


def _stream_for(
    topic: str,
    joint_topic: str,
    command_topic: str,
    joints: _Stream,
    commands: _Stream,
    images: Mapping[str, _Stream],
    cam_of_topic: Mapping[str, str],
) -> _Stream:
    if topic == joint_topic:
        return joints
    if topic == command_topic:
        return commands
    if topic in cam_of_topic:
        return images[cam_of_topic[topic]]
    return _Stream()


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def _joint_positions(msg: Any, names: list[str]) -> np.ndarray | None:
    index = {n: i for i, n in enumerate(msg.name)}
    pos = np.asarray(msg.position, dtype=np.float64)
    if any(n not in index for n in names) or len(pos) < len(msg.name):
        return None
    q = pos[[index[n] for n in names]]
    return q if np.all(np.isfinite(q)) else None


def _choose_clock(joints: _Stream, images: Mapping[str, _Stream]) -> str:
    """'header' unless a stamped stream's header times sit more than 1 s off its receive times."""
    for stream in (joints, *images.values()):
        head = np.asarray(stream.header, dtype=np.int64)
        recv = np.asarray(stream.received, dtype=np.int64)
        if np.any(head == 0) or abs(float(np.median(head - recv))) > 1.0 * _NS:
            return "received"
    return "header"


def _sorted(stream: _Stream, source: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times (ns, int64) in increasing order with the matching values; repeated times keep the
    last message (the newest of equal stamps)."""
    t = np.asarray(stream.header if source == "header" else stream.received, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t, values = t[order], values[order]
    keep = np.ones(len(t), dtype=bool)
    keep[:-1] = t[1:] != t[:-1]
    return t[keep], values[keep]


def _rate(t: np.ndarray) -> float:
    return float((len(t) - 1) * _NS / (t[-1] - t[0])) if len(t) > 1 and t[-1] > t[0] else 0.0


def _decode_frames(
    reader: Any,
    topics: Mapping[str, Any],
    cams: Mapping[str, str],
    needed: Mapping[str, np.ndarray],
    image_size: Sequence[int] | None,
    ts: Any,
    to_rgb: Any,
    resize_image: Any,
) -> dict[str, np.ndarray]:
    """Second pass over the image topics, decoding only the frames that the grid uses."""
    out: dict[str, np.ndarray] = {}
    for cam, topic in cams.items():
        want = needed[cam]
        unique = set(int(i) for i in want)
        decoded: dict[int, np.ndarray] = {}
        ordinal = -1
        for _, _, raw in reader.messages(connections=[topics[topic]]):
            ordinal += 1
            if ordinal not in unique:
                continue
            msg = ts.deserialize_cdr(raw, IMAGE)
            decoded[ordinal] = _image_pixels(msg, topic, to_rgb, resize_image, image_size)
            if len(decoded) == len(unique):
                break
        shapes = {img.shape for img in decoded.values()}
        if len(shapes) != 1:
            raise ValueError(
                f"{topic}: frames change size within the recording {sorted(shapes)}; "
                "pass image_size to resize them to one size"
            )
        out[cam] = np.stack([decoded[int(i)] for i in want])
    return out


def _image_pixels(
    msg: Any, topic: str, to_rgb: Any, resize_image: Any, image_size: Sequence[int] | None
) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0 or step < w or data.size < h * step:
        raise ValueError(
            f"{topic}: image of {h}x{w} with step {step} carries {data.size} bytes (corrupt)"
        )
    rows = data[: h * step].reshape(h, step)
    from diffusion_controller.policy.preprocess import CHANNELS

    channels = CHANNELS.get(msg.encoding, step // w)
    if w * channels > step:
        raise ValueError(f"{topic}: {msg.encoding} image of width {w} cannot fit in step {step}")
    pixels = rows[:, : w * channels].reshape(h, w, channels) if channels > 1 else rows[:, :w]
    rgb = to_rgb(pixels, msg.encoding)
    if image_size is not None:
        rgb = resize_image(rgb, (int(image_size[0]), int(image_size[1])))
    return rgb


def is_bag_dir(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a complete rosbag2 directory (has its metadata.yaml)."""
    return _is_bag(Path(path))


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
