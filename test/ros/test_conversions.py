"""Message conversions and input checks with real ROS message types."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

pytest.importorskip("sensor_msgs", reason="ROS message packages are not installed")

from sensor_msgs.msg import CompressedImage, Image, JointState

from diffusion_controller.control.stream import StreamPoint
from diffusion_controller.control.types import Chunk, Command
from diffusion_controller.ros import conversions as conv
from diffusion_controller.ros.conversions import InputRejected, JointStateFilter
from diffusion_controller.settings.controller import defaults

pytestmark = pytest.mark.ros

NAMES = [f"panda_joint{i}" for i in range(1, 8)]
TOLERANCE = defaults()["stamp_tolerance"]  # the setting (0.05 s), as the controller passes it


def _js(names, pos, vel=(), stamp=10.0):
    msg = JointState()
    msg.header.stamp = conv.sec_to_stamp(stamp)
    msg.name = list(names)
    msg.position = [float(x) for x in pos]
    msg.velocity = [float(x) for x in vel]
    return msg


def test_stamp_round_trip() -> None:
    for t in (0.0, 1.5, 1234567.000000123):
        assert conv.stamp_to_sec(conv.sec_to_stamp(t)) == pytest.approx(t, abs=1e-9)
    assert conv.stamp_to_sec(conv.sec_to_stamp(-3.0)) == 0.0


def test_joint_state_reordered_and_extra_ignored() -> None:
    f = JointStateFilter(NAMES, stamp_tolerance=TOLERANCE)
    names = ["panda_finger_joint1", *reversed(NAMES), "panda_finger_joint2"]
    pos = [math.nan, *[float(7 - i) for i in range(7)], 0.04]  # NaN only on an ignored joint
    vel = [0.0, *[0.1 * (7 - i) for i in range(7)], 0.0]
    s = f.check_msg(_js(names, pos, vel, stamp=10.0), now=10.01)
    np.testing.assert_allclose(s.positions, np.arange(1, 8, dtype=float))
    np.testing.assert_allclose(s.velocities, 0.1 * np.arange(1, 8))
    assert s.stamp == pytest.approx(10.0)
    s2 = f.check_msg(_js(NAMES, np.ones(7), (), stamp=10.02), now=10.03)
    assert s2.velocities is None
    assert f.accepted == 2


@pytest.mark.parametrize(
    ("names", "pos", "vel", "stamp", "kind", "fragment"),
    [
        (NAMES, [0.0] * 6, (), 10.0, "size", "7 names but 6 positions"),
        (NAMES, [0.0] * 7, [0.0] * 3, 10.0, "size", "3 velocities"),
        (NAMES[:6], [0.0] * 6, (), 10.0, "missing", "panda_joint7"),
        ([*NAMES, "panda_joint1"], [0.0] * 8, (), 10.0, "duplicate", "duplicate"),
        (NAMES, [0.0, math.nan, 0, 0, 0, 0, 0], (), 10.0, "nonfinite", "panda_joint2"),
        (NAMES, [0.0] * 7, [0, 0, math.inf, 0, 0, 0, 0], 10.0, "nonfinite", "velocity"),
        (NAMES, [0.0] * 7, (), 11.0, "future", "in the future"),
        (NAMES, [0.0] * 7, (), 0.0, "stamp", "unset"),
    ],
)
def test_joint_state_rejections(names, pos, vel, stamp, kind, fragment) -> None:
    f = JointStateFilter(NAMES, stamp_tolerance=TOLERANCE)
    with pytest.raises(InputRejected) as info:
        f.check_msg(_js(names, pos, vel, stamp), now=10.0)
    assert info.value.kind == kind
    assert fragment in info.value.reason
    assert f.rejected == {kind: 1}
    assert f.last_reason == info.value.reason


def test_joint_state_out_of_order() -> None:
    f = JointStateFilter(NAMES, stamp_tolerance=TOLERANCE)
    f.check_msg(_js(NAMES, np.zeros(7), stamp=10.0), now=10.0)
    for stamp in (10.0, 9.9):
        with pytest.raises(InputRejected, match="not after"):
            f.check_msg(_js(NAMES, np.zeros(7), stamp=stamp), now=10.0)
    assert f.rejected["order"] == 2
    f.reset()
    f.check_msg(_js(NAMES, np.zeros(7), stamp=9.9), now=10.0)


def _image(arr: np.ndarray, encoding: str, pad: int = 0) -> Image:
    msg = Image()
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    rows = arr.reshape(h, w * c)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 77, np.uint8)], axis=1)
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.step = w * c + pad
    msg.data = rows.tobytes()
    return msg


def test_image_encodings_and_padding() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    out = conv.image_to_model(_image(rgb, "rgb8", pad=5), (48, 64))
    np.testing.assert_array_equal(out, rgb)
    out = conv.image_to_model(_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8"), (48, 64))
    np.testing.assert_array_equal(out, rgb)
    mono = rgb[:, :, 0].copy()
    out = conv.image_to_model(_image(mono, "mono8", pad=3), (48, 64))
    np.testing.assert_array_equal(out, np.repeat(mono[:, :, None], 3, axis=2))
    small = conv.image_to_model(_image(rgb, "rgb8"), (24, 32))
    assert small.shape == (24, 32, 3) and small.dtype == np.uint8
    # Area averaging: a 2x2 block mean.
    expect = rgb[:2, :2].astype(float).mean(axis=(0, 1))
    np.testing.assert_allclose(small[0, 0], expect, atol=0.51)


def test_image_rejections() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    msg = _image(rgb, "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(InputRejected, match="header promises"):
        conv.image_to_model(msg, (4, 4))
    with pytest.raises(InputRejected, match="unsupported image encoding 'jpeg'"):
        conv.image_to_model(_image(rgb, "jpeg"), (4, 4))
    bad = _image(rgb, "rgb8")
    bad.step = 5
    with pytest.raises(InputRejected, match="below width"):
        conv.image_to_model(bad, (4, 4))
    empty = Image()
    empty.encoding = "rgb8"
    with pytest.raises(InputRejected, match="empty"):
        conv.image_to_model(empty, (4, 4))


# BT.601 video-range reference colours (Y, U, V) -> RGB, from the standard's matrix.
YUV_REFERENCE = [
    ((235, 128, 128), (255, 255, 255)),
    ((16, 128, 128), (0, 0, 0)),
    ((126, 128, 128), (128, 128, 128)),
    ((81, 90, 240), (255, 0, 0)),
    ((145, 54, 34), (0, 255, 0)),
    ((41, 240, 110), (0, 0, 255)),
]


def _yuv422_msg(pixels: list[tuple[int, int, int]], encoding: str, pad: int = 0) -> Image:
    """A real sensor_msgs/Image of one row pair per reference colour, packed as the driver does."""
    order = {"yuv422": "UYVY", "uyvy": "UYVY", "yuv422_yuy2": "YUYV", "yuyv": "YUYV"}[encoding]
    rows = []
    for y, u, v in pixels:  # each colour: a 4x2 block (two pixel pairs, two rows)
        pair = bytes({"Y": y, "U": u, "V": v}[ch] if ch != "Y" else y for ch in order)
        rows.append(pair * 2 + b"\x4d" * pad)
    msg = Image()
    msg.height, msg.width, msg.encoding = 2 * len(pixels), 4, encoding
    msg.step = 4 * 2 + pad
    msg.data = b"".join(r + r for r in rows)
    return msg


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_bt601(encoding: str) -> None:
    msg = _yuv422_msg([yuv for yuv, _ in YUV_REFERENCE], encoding, pad=3)
    out = conv.image_to_model(msg, (msg.height, msg.width))
    assert out.shape == (msg.height, 4, 3) and out.dtype == np.uint8
    for k, (_, rgb) in enumerate(YUV_REFERENCE):
        block = out[2 * k:2 * k + 2].reshape(-1, 3).astype(int)
        assert np.all(np.abs(block - np.array(rgb)) <= 2), (encoding, k, block[0], rgb)


def test_yuv422_byte_orders_differ() -> None:
    """The same bytes read as UYVY and as YUYV give different pictures: the order is honoured."""
    uyvy = _yuv422_msg([(81, 90, 240)], "uyvy")
    yuyv = _yuv422_msg([(81, 90, 240)], "yuv422_yuy2")
    assert uyvy.data != yuyv.data
    red = conv.image_to_model(uyvy, (2, 4))
    np.testing.assert_array_equal(red, conv.image_to_model(yuyv, (2, 4)))
    swapped = Image(height=2, width=4, encoding="yuyv", step=8, data=uyvy.data)
    assert not np.array_equal(conv.image_to_model(swapped, (2, 4)), red)


def test_yuv422_odd_width_refused() -> None:
    msg = Image(height=1, width=3, encoding="yuyv", step=6, data=bytes(6))
    with pytest.raises(InputRejected, match="width must be even"):
        conv.image_to_model(msg, (1, 3))


def test_8uc3_needs_a_channel_order() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order, blue in BGR order
    msg = _image(rgb, "8UC3")
    with pytest.raises(InputRejected, match="camera_8uc3_order to 'rgb' or 'bgr'") as exc:
        conv.image_to_model(msg, (2, 2))
    assert exc.value.kind == "encoding"
    np.testing.assert_array_equal(conv.image_to_model(msg, (2, 2), order_8uc3="rgb"), rgb)
    np.testing.assert_array_equal(conv.image_to_model(msg, (2, 2), order_8uc3="bgr"),
                                  rgb[:, :, ::-1])


@pytest.mark.parametrize("encoding, nbytes", [("16UC1", 2), ("mono16", 2), ("32FC1", 4),
                                              ("16SC1", 2), ("rgb16", 6), ("64FC1", 8)])
def test_depth_and_wide_images_refused_with_reason(encoding: str, nbytes: int) -> None:
    depth = np.full((3, 4), 1234, np.uint16).tobytes() if nbytes == 2 else bytes(3 * 4 * nbytes)
    msg = Image(height=3, width=4, encoding=encoding, step=4 * nbytes, data=depth[:3 * 4 * nbytes])
    with pytest.raises(InputRejected) as exc:
        conv.image_to_model(msg, (3, 4))
    assert exc.value.kind == "encoding"
    reason = str(exc.value)
    assert f"{encoding!r} is a depth or 16/32-bit image" in reason
    for accepted in ("rgb8", "bgr8", "mono8", "yuv422", "yuyv", "uyvy", "8UC3"):
        assert accepted in reason


def test_compressed_decode() -> None:
    decoder = conv.compressed_decoder()
    if decoder is None:
        pytest.skip("neither Pillow nor OpenCV is installed: no CompressedImage decoder")
    from PIL import Image as PILImage

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:] = (0, 0, 255)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG")
    msg = CompressedImage()
    msg.format = "png"
    msg.data = buf.getvalue()
    out = conv.decode_compressed(msg, (16, 16))
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[:, :8], np.broadcast_to([255, 0, 0], (16, 8, 3)))
    msg.data = b"\x89PNG not really"
    with pytest.raises(InputRejected, match="could not decode"):
        conv.decode_compressed(msg, (16, 16))


def test_command_messages() -> None:
    cmd = Command(stamp=5.25, positions=np.arange(7.0), velocities=np.ones(7),
                  accelerations=np.full(7, 2.0))
    m = conv.position_command_msg(cmd)
    assert list(m.data) == list(np.arange(7.0))
    # a streamed trajectory: the points' times become the stamp (the first) and time_from_start
    pts = [StreamPoint(5.25 + 0.01 * k, np.arange(7.0) + k, np.ones(7) * k, -np.ones(7))
           for k in range(11)]
    t = conv.trajectory_stream_msg(pts, NAMES)
    assert t.joint_names == NAMES and len(t.points) == 11
    assert conv.stamp_to_sec(t.header.stamp) == pytest.approx(5.25)  # when point 0 is due
    assert list(t.points[1].velocities) == [1.0] * 7
    assert t.points[0].time_from_start.nanosec == 0
    assert t.points[10].time_from_start.sec == 0
    assert t.points[10].time_from_start.nanosec == 100_000_000
    assert list(t.points[10].positions) == list(np.arange(7.0) + 10)
    assert list(t.points[4].accelerations) == [-1.0] * 7
    assert conv.trajectory_stream_msg([], NAMES).points == []


def test_chunk_and_markers() -> None:
    chunk = Chunk(t0=3.0, dt=0.1, positions=np.random.default_rng(1).normal(size=(16, 7)), seq=4)
    m = conv.chunk_trajectory_msg(chunk, NAMES, "base")
    assert len(m.points) == 16
    assert m.points[15].time_from_start.sec == 1
    assert m.points[15].time_from_start.nanosec == 500_000_000
    np.testing.assert_allclose(m.points[3].positions, chunk.positions[3])
    path = np.linspace([0, 0, 0], [1, 1, 1], 16)
    markers = conv.path_markers(path, "panda_link0", 3.0)
    assert len(markers.markers) == 2
    assert markers.markers[0].header.frame_id == "panda_link0"
    assert len(markers.markers[1].points) == 16
    assert markers.markers[0].points[15].x == pytest.approx(1.0)
