"""Messages in and out of the node, and the checks that keep bad input out of the core.

Incoming joint states are matched by name, reordered into the controller's joint order and checked
(sizes, duplicates, missing joints, NaN/Inf, stamps out of order or in the future) before they reach
the control loop; a rejected message carries a one-line reason the node counts and logs (throttled).
Images are converted to RGB at the model's size with the same numpy code the dataset uses, so the
model sees identical pixels in training and on the robot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from diffusion_controller.control.stream import StreamPoint
from diffusion_controller.control.types import Chunk, Command
from diffusion_controller.policy.preprocess import (
    CHANNELS,
    prepare_image,
    resolve_encoding,
    unsupported_reason,
)
from diffusion_controller.runtime.joint_input import InputRejected, JointSample
from diffusion_controller.runtime.joint_input import JointStateFilter as _JointStateFilter

# --- time -------------------------------------------------------------------------------------


def stamp_to_sec(stamp: object) -> float:
    """builtin_interfaces/Time (sec, nanosec) to float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)  # type: ignore[attr-defined]


def sec_to_stamp(t: float) -> object:
    """Float seconds to builtin_interfaces/Time (non-negative, nanoseconds rounded)."""
    from builtin_interfaces.msg import Time

    ns = max(0, round(float(t) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def sec_to_duration(t: float) -> object:
    from builtin_interfaces.msg import Duration

    ns = max(0, round(float(t) * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# --- joint states -----------------------------------------------------------------------------


class JointStateFilter(_JointStateFilter):
    """The core's joint-state check (runtime/joint_input.py), fed a sensor_msgs/JointState."""

    def check_msg(self, msg: object, now: float) -> JointSample:
        """sensor_msgs/JointState -> JointSample (or InputRejected)."""
        return self.check(
            msg.name,  # type: ignore[attr-defined]
            msg.position,  # type: ignore[attr-defined]
            msg.velocity,  # type: ignore[attr-defined]
            stamp_to_sec(msg.header.stamp),  # type: ignore[attr-defined]
            now,
        )


# --- images -------------------------------------------------------------------------------------


def image_array(msg: object, order_8uc3: str = "") -> tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (uint8 [H, W, C] view without row padding, encoding to decode with).

    Raises InputRejected for unsupported encodings (depth and 16-bit images, 8UC3 without a stated
    channel order: the reason says what is accepted and how), empty images and data shorter than
    the header promises (a truncated message must not turn into garbage pixels). C is the bytes a
    pixel: 2 for packed 4:2:2 (yuv422, yuyv, ...).
    """
    raw = str(msg.encoding)  # type: ignore[attr-defined]
    if raw not in CHANNELS:
        raise InputRejected("encoding", unsupported_reason(raw))
    try:
        enc = resolve_encoding(raw, order_8uc3)
    except ValueError as exc:
        raise InputRejected("encoding", str(exc)) from exc
    c = CHANNELS[raw]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)  # type: ignore[attr-defined]
    if h <= 0 or w <= 0:
        raise InputRejected("size", f"image is empty ({w}x{h})")
    if step < w * c:
        raise InputRejected("size", f"image step {step} is below width*channels {w * c}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)  # type: ignore[attr-defined]
    if buf.shape[0] < step * h:
        raise InputRejected(
            "size", f"image data has {buf.shape[0]} bytes, header promises {step * h}"
        )
    rows = buf[: step * h].reshape(h, step)[:, : w * c]
    return rows.reshape(h, w, c), enc


def image_to_model(msg: object, size: Sequence[int], order_8uc3: str = "") -> np.ndarray:
    """sensor_msgs/Image -> uint8 RGB [H, W, 3] at the model's image size.

    `order_8uc3` ('' | 'rgb' | 'bgr', the camera_8uc3_order parameter) says how to read 8UC3.
    """
    arr, enc = image_array(msg, order_8uc3)
    try:
        return prepare_image(arr, enc, size)
    except ValueError as exc:
        raise InputRejected("encoding", str(exc)) from exc


def compressed_decoder() -> str | None:
    """Which library decodes CompressedImage here: "pillow", "opencv", or None (none installed)."""
    try:
        import PIL.Image  # noqa: F401

        return "pillow"
    except ImportError:
        pass
    try:
        import cv2  # noqa: F401

        return "opencv"
    except ImportError:
        return None


def decode_compressed(msg: object, size: Sequence[int], decoder: str | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> uint8 RGB [H, W, 3] at the model's image size."""
    decoder = decoder or compressed_decoder()
    data = bytes(msg.data)  # type: ignore[attr-defined]
    if not data:
        raise InputRejected("size", "compressed image is empty")
    try:
        if decoder == "pillow":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        elif decoder == "opencv":
            import cv2

            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError("cv2.imdecode could not decode the data")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        else:
            raise InputRejected(
                "decoder", "no CompressedImage decoder: install Pillow or OpenCV (cv2)"
            )
    except InputRejected:
        raise
    except Exception as exc:  # corrupt data: every decoder raises its own exception type
        fmt = str(getattr(msg, "format", "")) or "unknown format"
        raise InputRejected("decode", f"could not decode compressed image ({fmt}): {exc}") from exc
    return prepare_image(rgb, "rgb8", size)


# --- commands and chunks out --------------------------------------------------------------------


def position_command_msg(cmd: Command) -> object:
    """Command -> std_msgs/Float64MultiArray for ros2_control's forward position controller."""
    from std_msgs.msg import Float64MultiArray

    msg = Float64MultiArray()
    msg.data = [float(x) for x in cmd.positions]
    return msg


def trajectory_stream_msg(points: Sequence[StreamPoint], joint_names: Sequence[str]) -> object:
    """A streamed trajectory (control/stream.py) -> trajectory_msgs/JointTrajectory for a
    joint_trajectory_controller (open_loop_control true): header stamp = the first point's time,
    each point's time_from_start its time after that. Why the points are what they are (due
    before the message arrives, the previous message's points repeated): control/stream.py."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    msg.joint_names = list(joint_names)
    if not points:
        return msg
    first = points[0].time
    msg.header.stamp = sec_to_stamp(first)
    for p in points:
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in p.positions]
        pt.velocities = [float(x) for x in p.velocities]
        pt.accelerations = [float(x) for x in p.accelerations]
        pt.time_from_start = sec_to_duration(p.time - first)
        msg.points.append(pt)
    return msg


def chunk_trajectory_msg(chunk: Chunk, joint_names: Sequence[str], frame_id: str = "") -> object:
    """The chunk as trajectory_msgs/JointTrajectory, stamped t0, points at k*dt (visualisation)."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    msg.header.stamp = sec_to_stamp(chunk.t0)
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    points = []
    for k, row in enumerate(np.asarray(chunk.positions, dtype=np.float64)):
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in row]
        pt.time_from_start = sec_to_duration(k * chunk.dt)
        points.append(pt)
    msg.points = points
    return msg


def path_markers(
    points: np.ndarray,
    frame_id: str,
    stamp: float,
    ns: str = "chunk",
    color: tuple[float, float, float, float] = (0.1, 0.8, 0.2, 1.0),
) -> object:
    """End-effector path [N, 3] as visualization_msgs/MarkerArray: a line strip and its points."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    pts = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in np.asarray(points)]
    rgba = ColorRGBA(r=color[0], g=color[1], b=color[2], a=color[3])
    line = Marker()
    line.header.frame_id = frame_id
    line.header.stamp = sec_to_stamp(stamp)
    line.ns = ns
    line.id = 0
    line.type = Marker.LINE_STRIP
    line.action = Marker.ADD
    line.pose.orientation.w = 1.0
    line.scale.x = 0.005
    line.color = rgba
    line.points = pts
    dots = Marker()
    dots.header = line.header
    dots.ns = ns
    dots.id = 1
    dots.type = Marker.SPHERE_LIST
    dots.action = Marker.ADD
    dots.pose.orientation.w = 1.0
    dots.scale.x = dots.scale.y = dots.scale.z = 0.015
    dots.color = rgba
    dots.points = pts
    out = MarkerArray()
    out.markers = [line, dots]
    return out
