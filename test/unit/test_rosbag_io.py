"""rosbag2 (MCAP) round trips with synthetic messages: alignment, joint order, images, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffusion_controller.data.rosbag_io import (
    BagWriter,
    is_bag_dir,
    read_episode,
    read_task_messages,
)

NAMES = [f"panda_joint{i}" for i in range(1, 8)]
T0 = 1_700_000_000 * 10**9  # a wall-clock epoch, like a real recording
MS = 1_000_000


def q_of(t_ns: np.ndarray | int) -> np.ndarray:
    """Joint j moves linearly at (j + 1) * 0.1 rad/s from j * 0.2 rad: easy to check anywhere."""
    s = (np.asarray(t_ns, dtype=np.float64) - T0) / 1e9
    return np.stack([0.2 * j + 0.1 * (j + 1) * s for j in range(7)], axis=-1)


def frame_of(k: int, h: int = 12, w: int = 16) -> np.ndarray:
    """RGB frame k: red = k, green = 2k, blue = 255 - k, uniform, so its index reads back."""
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = k, 2 * k, 255 - k
    return img


def write_synthetic(path: Path, *, task: bool = True, clock_offset: int = 0) -> None:
    """Joint states at 200 Hz (shuffled names, fingers included) from t = 20 ms, commands at
    100 Hz from t = 0 up to 1.5 s, bgr8 images at 20 Hz from 30 ms with padded rows."""
    order = [3, 0, 6, 1, 5, 2, 4]
    names = [NAMES[i] for i in order] + ["panda_finger_joint1", "panda_finger_joint2"]
    with BagWriter(path) as w:
        if task:
            w.task(T0, json.dumps({"seed": 5, "note": "first"}))
        for k in range(0, 151):
            t = T0 + 10 * MS * k
            w.command(t, q_of(t) + 0.5)
        for k in range(0, 320):
            t = T0 + 20 * MS + 5 * MS * k
            q = q_of(t)
            w.joint_state(t + clock_offset, names, np.r_[q[order], 0.01, 0.01], received_ns=t + MS)
        for k in range(0, 33):
            t = T0 + 30 * MS + 50 * MS * k
            bgr = frame_of(k)[..., ::-1]
            w.image(t + clock_offset, bgr, encoding="bgr8", step=16 * 3 + 8, received_ns=t + MS)
        if task:
            w.task(T0 + 1500 * MS, json.dumps({"seed": 5, "note": "last"}))


@pytest.fixture()
def bag(tmp_path: Path) -> Path:
    path = tmp_path / "ep"
    write_synthetic(path)
    return path


def test_round_trip_aligns_by_stamp(bag: Path) -> None:
    assert is_bag_dir(bag)
    ep = read_episode(bag, 0.1, NAMES)
    # Grid: from the first time every stream exists (first image at 30 ms) to the last command
    # (1.5 s), every 100 ms.
    assert ep.dt == pytest.approx(0.1)
    assert len(ep) == 15
    assert ep.meta["t0"] == pytest.approx((T0 + 30 * MS) / 1e9)
    assert ep.stamps[0] == 0.0
    grid_ns = T0 + 30 * MS + 100 * MS * np.arange(15)
    # Joint states are interpolated (linear motion: exact) and reordered by name.
    np.testing.assert_allclose(ep.joints, q_of(grid_ns), atol=1e-6)
    # Actions: the newest command at or before each grid time (commands sit on 10 ms ticks).
    newest_cmd = T0 + (grid_ns - T0) // (10 * MS) * 10 * MS
    np.testing.assert_allclose(ep.actions, q_of(newest_cmd) + 0.5, atol=1e-6)
    # Images: the newest frame at or before, converted from bgr8 (with row padding) to RGB.
    imgs = ep.images["camera"]
    assert imgs.shape == (15, 12, 16, 3) and imgs.dtype == np.uint8
    expected_k = (grid_ns - (T0 + 30 * MS)) // (50 * MS)
    for i, k in enumerate(expected_k):
        np.testing.assert_array_equal(imgs[i], frame_of(int(k)))
    assert ep.meta["task"] == {"seed": 5, "note": "last"}
    assert ep.meta["stamp_source"] == "header"
    assert ep.meta["rates_hz"]["joint_states"] == pytest.approx(200.0)
    assert ep.meta["rates_hz"]["images.camera"] == pytest.approx(20.0)


def test_joint_subset_order_and_resize(bag: Path) -> None:
    names = ["panda_joint7", "panda_joint2"]
    with pytest.raises(ValueError):  # commands carry 7 values, not 2: none usable
        read_episode(bag, 0.1, names)
    ep = read_episode(bag, 0.05, NAMES, cameras={"wrist": "/camera/image_raw"}, image_size=(6, 8))
    assert set(ep.images) == {"wrist"} and ep.images["wrist"].shape[1:] == (6, 8, 3)
    # Uniform frames stay uniform through area averaging.
    np.testing.assert_array_equal(ep.images["wrist"][0], frame_of(0, 6, 8))
    assert ep.dt == pytest.approx(0.05)


def test_episode_save_load_keeps_meta(bag: Path, tmp_path: Path) -> None:
    ep = read_episode(bag, 0.1, NAMES)
    ep.save(tmp_path / "ep.npz")
    back = type(ep).load(tmp_path / "ep.npz")
    np.testing.assert_array_equal(back.images["camera"], ep.images["camera"])
    assert back.meta["task"]["note"] == "last"


def test_header_stamps_on_another_clock_fall_back_to_receive_time(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    write_synthetic(path, clock_offset=-T0 + 5 * 10**9)  # stamps from a clock starting near 5 s
    with pytest.warns(UserWarning, match="receive time"):
        ep = read_episode(path, 0.1, NAMES)
    assert ep.meta["stamp_source"] == "received"
    # Receive times are 1 ms late: the data still lines up to within that.
    assert len(ep) == 15
    grid_ns = T0 + 31 * MS + 100 * MS * np.arange(15)
    np.testing.assert_allclose(ep.joints, q_of(grid_ns - MS), atol=1e-6)


def test_bad_messages_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "dirty"
    with BagWriter(path) as w:
        for k in range(50):
            t = T0 + 20 * MS * k
            w.command(t, q_of(t))
            w.joint_state(t, NAMES, q_of(t))
            w.image(t, frame_of(k))
        w.command(T0 + 5 * MS, np.zeros(6))  # wrong length
        w.command(T0 + 7 * MS, np.full(7, np.nan))  # NaN
        w.joint_state(T0 + 9 * MS, NAMES, np.full(7, np.inf))  # Inf
        w.joint_state(T0 + 11 * MS, NAMES[:3], np.zeros(3))  # lacks joints
    ep = read_episode(path, 0.02, NAMES)
    assert ep.meta["skipped"]["commands"] == 2
    assert ep.meta["skipped"]["joint_states"] == 2
    assert np.all(np.isfinite(ep.joints)) and np.all(np.isfinite(ep.actions))
    assert len(ep) == 50
    assert "task" not in ep.meta


def test_clear_errors(tmp_path: Path, bag: Path) -> None:
    with pytest.raises(ValueError, match="not a rosbag2 directory"):
        read_episode(tmp_path / "nothing", 0.1, NAMES)
    with pytest.raises(ValueError, match=r"joints \['elbow'\] not found"):
        read_episode(bag, 0.1, [*NAMES[:6], "elbow"])
    with pytest.raises(ValueError, match="lacks topics"):
        read_episode(bag, 0.1, NAMES, cameras={"camera": "/other/image"})
    with pytest.raises(ValueError, match="action_dt"):
        read_episode(bag, 0.0, NAMES)
    with pytest.raises(ValueError, match="unique"):
        read_episode(bag, 0.1, [NAMES[0], NAMES[0]])

    empty = tmp_path / "empty"
    BagWriter(empty).close()
    with pytest.raises(ValueError, match="no messages"):
        read_episode(empty, 0.1, NAMES)

    # Commands that end before the first image: the streams never overlap.
    early = tmp_path / "early"
    with BagWriter(early) as w:
        w.command(T0, np.zeros(7))
        w.joint_state(T0, NAMES, np.zeros(7))
        w.image(T0 + 100 * MS, frame_of(0))
    with pytest.raises(ValueError, match="never overlap"):
        read_episode(early, 0.1, NAMES)

    # A corrupt storage file is an error, not a crash.
    broken = tmp_path / "broken"
    shutil.copytree(bag, broken)
    for f in broken.glob("*.mcap"):
        f.write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(ValueError):
        read_episode(broken, 0.1, NAMES)


def test_task_messages_in_order(bag: Path, tmp_path: Path) -> None:
    texts = read_task_messages(bag)
    assert [json.loads(t)["note"] for t in texts] == ["first", "last"]
    plain = tmp_path / "plain"
    write_synthetic(plain, task=False)
    assert read_task_messages(plain) == []
