"""Writing rosbag2 recordings like a real robot would, without a ROS install (`rosbags`).

Used by `diffusion-controller record` and by the tests. A recording has exactly the topics and
message types a real arm records: sensor_msgs/msg/Image (or CompressedImage, jpeg/png) on the
camera topics, sensor_msgs/msg/JointState on /joint_states, std_msgs/msg/Float64MultiArray on
/forward_position_controller/commands or trajectory_msgs/msg/JointTrajectory on a trajectory
controller's topic, std_msgs/msg/String (JSON task description) on /sim/task, and optionally an
episode marker (std_msgs/msg/Bool or String). Storage is MCAP (default) or sqlite3 (Humble's
default). rosbags writes metadata version 8, which Humble's own `ros2 bag` may warn about;
rosbags itself reads every version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.data.images import COMPRESSED, IMAGE, encode_compressed

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"

DEFAULT_TOPICS = {
    "joint_states": "/joint_states",
    "commands": "/forward_position_controller/commands",
    "task": "/sim/task",
    # the forward gripper controller: Float64MultiArray, one position per finger joint
    "gripper_commands": "/gripper_controller/commands",
}
DEFAULT_CAMERAS = {"camera": "/camera/image_raw"}
STORAGES = ("mcap", "sqlite3")
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
    """Writes one rosbag2 directory (MCAP or sqlite3 storage) with a demonstration's topics.

    Times are integer nanoseconds. A message's bag (receive) time equals its header stamp, as if
    recorded on the robot's clock with no transport delay, unless `received_ns` says otherwise.
    `cameras` carry sensor_msgs/Image, `compressed_cameras` CompressedImage; `command_topic`
    (Float64MultiArray) and `trajectory_topic` (JointTrajectory) may each be None, as in a
    kinesthetic demonstration that records joint states only. `gripper_topic` (Float64MultiArray,
    one position per gripper joint, e.g. [w/2, w/2] for a Panda hand at width w) carries the
    gripper's commands when the demonstration has a gripper.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cameras: Mapping[str, str] | None = None,
        joint_topic: str = DEFAULT_TOPICS["joint_states"],
        command_topic: str | None = DEFAULT_TOPICS["commands"],
        task_topic: str | None = DEFAULT_TOPICS["task"],
        compressed_cameras: Mapping[str, str] | None = None,
        trajectory_topic: str | None = None,
        marker_topic: str | None = None,
        marker_type: str = BOOL,
        storage: str = "mcap",
        gripper_topic: str | None = None,
    ) -> None:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
        from rosbags.interfaces import QosTime as _T
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.ts = typestore()
        self.path = Path(path)
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=8, storage_plugin=plugin)
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
        raw_cams = DEFAULT_CAMERAS if cameras is None and not compressed_cameras else cameras
        self._cams = {
            name: add(topic, IMAGE, typestore=self.ts, offered_qos_profiles=sensor)
            for name, topic in (raw_cams or {}).items()
        }
        self._zcams = {
            name: add(topic, COMPRESSED, typestore=self.ts, offered_qos_profiles=sensor)
            for name, topic in (compressed_cameras or {}).items()
        }
        self._joints = add(joint_topic, JOINT_STATE, typestore=self.ts, offered_qos_profiles=sensor)
        self._cmds = (
            add(command_topic, FLOAT64_ARRAY, typestore=self.ts, offered_qos_profiles=reliable)
            if command_topic
            else None
        )
        self._traj = (
            add(trajectory_topic, TRAJECTORY, typestore=self.ts, offered_qos_profiles=reliable)
            if trajectory_topic
            else None
        )
        self._gripper = (
            add(gripper_topic, FLOAT64_ARRAY, typestore=self.ts, offered_qos_profiles=reliable)
            if gripper_topic
            else None
        )
        if marker_type not in (BOOL, STRING):
            raise ValueError(f"marker_type must be {BOOL} or {STRING}, got {marker_type!r}")
        self._marker_type = marker_type
        self._marker = (
            add(marker_topic, marker_type, typestore=self.ts, offered_qos_profiles=reliable)
            if marker_topic
            else None
        )
        self._task = (
            add(task_topic, STRING, typestore=self.ts, offered_qos_profiles=latched)
            if task_topic
            else None
        )
        self.counts: dict[str, int] = {
            "images": 0,
            "joint_states": 0,
            "commands": 0,
            "trajectories": 0,
            "task": 0,
            "markers": 0,
            "gripper_commands": 0,
        }

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
            position=np.ascontiguousarray(position, dtype=np.float64),
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
            layout=layout, data=np.ascontiguousarray(positions, dtype=np.float64)
        )
        if self._cmds is None:
            raise ValueError("this writer was opened without a command topic")
        self._write(self._cmds, t_ns, msg, "commands", None)

    def gripper_command(self, t_ns: int, positions: np.ndarray) -> None:
        """A gripper command (one position per gripper joint); `t_ns` is its receive time."""
        if self._gripper is None:
            raise ValueError("this writer was opened without a gripper topic")
        layout = self.ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        msg = self.ts.types[FLOAT64_ARRAY](
            layout=layout, data=np.ascontiguousarray(positions, dtype=np.float64)
        )
        self._write(self._gripper, t_ns, msg, "gripper_commands", None)

    def compressed_image(
        self,
        t_ns: int,
        rgb: np.ndarray,
        camera: str | None = None,
        fmt: str = "jpeg",
        frame_id: str = "camera_optical_frame",
        received_ns: int | None = None,
    ) -> None:
        """RGB `rgb` [H, W, 3] as a CompressedImage in `fmt` (jpeg or png)."""
        if not self._zcams:
            raise ValueError("this writer was opened without compressed cameras")
        msg = self.ts.types[COMPRESSED](
            header=_header(self.ts, t_ns, frame_id),
            format=fmt,
            data=np.frombuffer(encode_compressed(rgb, fmt), dtype=np.uint8),
        )
        conn = self._zcams[camera] if camera is not None else next(iter(self._zcams.values()))
        self._write(conn, t_ns, msg, "images", received_ns)

    def trajectory(
        self,
        t_ns: int,
        names: Sequence[str],
        positions: np.ndarray,
        time_from_start: float = 0.0,
        stamped: bool = True,
        received_ns: int | None = None,
    ) -> None:
        """A one-point JointTrajectory; `stamped=False` leaves the header stamp zero ("now")."""
        if self._traj is None:
            raise ValueError("this writer was opened without a trajectory topic")
        tfs = round(float(time_from_start) * _NS)
        duration = self.ts.types["builtin_interfaces/msg/Duration"]
        empty = np.zeros(0, dtype=np.float64)
        point = self.ts.types["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.ascontiguousarray(positions, dtype=np.float64),
            velocities=empty,
            accelerations=empty,
            effort=empty,
            time_from_start=duration(sec=int(tfs // _NS), nanosec=int(tfs % _NS)),
        )
        msg = self.ts.types[TRAJECTORY](
            header=_header(self.ts, t_ns if stamped else 0, ""),
            joint_names=list(names),
            points=[point],
        )
        self._write(self._traj, t_ns, msg, "trajectories", received_ns)

    def marker(self, t_ns: int, value: bool | str = True) -> None:
        """An episode marker: Bool True/False opens/closes an episode; a String opens one."""
        if self._marker is None:
            raise ValueError("this writer was opened without a marker topic")
        kind = self._marker_type
        msg = self.ts.types[kind](data=bool(value) if kind == BOOL else str(value))
        self._write(self._marker, t_ns, msg, "markers", None)

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
