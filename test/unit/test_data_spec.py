"""Data specs over real rosbag2 files written by `rosbags`: both storages (mcap, sqlite3), Image
and CompressedImage (jpeg, png) cameras, commands / trajectory / measured actions, header-stamp
alignment with a clock tolerance, and episodes split by a marker topic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusion_controller.data.align import ClockMismatchError
from diffusion_controller.data.rosbag_io import BagWriter, read_episode, read_episodes
from diffusion_controller.data.spec import DataSpec, SpecError, load_spec, parse_spec

NAMES = [f"fr3_joint{i}" for i in range(1, 8)]
T0 = 1_700_000_000 * 10**9
MS = 1_000_000
TRAJ = "/fr3_arm_controller/joint_trajectory"
WRIST, SCENE = "/wrist/image_raw/compressed", "/scene/image_raw/compressed"


def q_of(t_ns: np.ndarray | int) -> np.ndarray:
    s = (np.asarray(t_ns, dtype=np.float64) - T0) / 1e9
    return np.stack([0.1 * j + 0.2 * (j + 1) * s for j in range(7)], axis=-1)


def frame_of(k: int) -> np.ndarray:
    img = np.empty((16, 24, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = (6 * k) % 256, (200 - 4 * k) % 256, 100
    return img


def write_fr3(path: Path, storage: str, *, joint_clock_ms: int = 0, stamped: bool = True) -> None:
    """Joint states at 200 Hz, one-point trajectories at 50 Hz (time_from_start 20 ms), a jpeg
    wrist camera and a png scene camera at 20 Hz, the joint states' header stamps
    `joint_clock_ms` ahead of the recorder's clock."""
    with BagWriter(
        path,
        cameras={},
        compressed_cameras={"wrist": WRIST, "scene": SCENE},
        command_topic=None,
        trajectory_topic=TRAJ,
        task_topic=None,
        storage=storage,
    ) as w:
        for k in range(400):
            t = T0 + 5 * MS * k
            w.joint_state(t + joint_clock_ms * MS, NAMES[::-1], q_of(t)[::-1], received_ns=t)
        for k in range(100):
            t = T0 + 20 * MS * k
            w.trajectory(t, NAMES, q_of(t + 20 * MS) + 0.5, time_from_start=0.02, stamped=stamped)
        for k in range(40):
            t = T0 + 50 * MS * k
            w.compressed_image(t, frame_of(k), camera="wrist", fmt="jpeg")
            w.compressed_image(t, frame_of(k), camera="scene", fmt="png")


SPEC = {
    "joint_states": {"topic": "/joint_states"},
    "action": {"source": "trajectory", "topic": TRAJ},
    "cameras": {"wrist": WRIST, "scene": SCENE},
}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_both_storages_with_compressed_images_and_trajectories(tmp_path: Path, storage) -> None:
    path = tmp_path / storage
    write_fr3(path, storage)
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    assert any(f.suffix == suffix for f in path.iterdir())
    ep = read_episode(path, 0.1, NAMES, spec=parse_spec(SPEC))
    # Grid from the first trajectory point due (sent at 0, due at 20 ms) to the last (2.0 s).
    assert len(ep) == 20 and ep.meta["stamp_source"] == "header"
    assert ep.meta["t0"] == pytest.approx((T0 + 20 * MS) / 1e9)
    grid = T0 + 20 * MS + 100 * MS * np.arange(20)
    np.testing.assert_allclose(ep.joints, q_of(grid), atol=1e-6)
    # A trajectory message sent at s is the target for s + 20 ms: at grid time g the newest point
    # due is the message sent at g - 20 ms, targeting q(g) + 0.5.
    np.testing.assert_allclose(ep.actions, q_of(grid) + 0.5, atol=1e-6)
    k = (grid - T0) // (50 * MS)
    for i, kk in enumerate(k):
        np.testing.assert_array_equal(ep.images["scene"][i], frame_of(int(kk)))  # png: exact
        err = np.abs(ep.images["wrist"][i].astype(int) - frame_of(int(kk)).astype(int))
        assert err.max() <= 6  # jpeg: lossy, but the frame is the right one
    assert ep.meta["action_source"] == "trajectory"
    assert ep.meta["rates_hz"]["trajectory"] == pytest.approx(50.0)


def test_unstamped_trajectories_are_timed_by_receive_time(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    write_fr3(path, "mcap", stamped=False)
    ep = read_episode(path, 0.1, NAMES, spec=parse_spec(SPEC))
    grid = T0 + 20 * MS + 100 * MS * np.arange(len(ep))
    np.testing.assert_allclose(ep.actions, q_of(grid) + 0.5, atol=1e-6)


def test_clock_disagreement_names_both_topics(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    write_fr3(path, "mcap", joint_clock_ms=80)
    with pytest.raises(ClockMismatchError) as err:
        read_episode(path, 0.1, NAMES, spec=parse_spec(SPEC))
    msg = str(err.value)
    assert f"clocks of /joint_states and {TRAJ} disagree by 80.0 ms" in msg
    assert "50 ms tolerance" in msg and str(path) in msg
    # A wider tolerance accepts it; header stamps are then used as they are.
    loose = parse_spec({**SPEC, "alignment": {"tolerance_s": 0.1}})
    ep = read_episode(path, 0.1, NAMES, spec=loose)
    assert ep.meta["clock_offsets_s"]["/joint_states"] == pytest.approx(0.08)


def test_measured_actions_lead_the_joint_states(tmp_path: Path) -> None:
    """Kinesthetic teaching: no command topic; the action is where the arm was lead_s later."""
    path = tmp_path / "kinesthetic"
    with BagWriter(path, cameras={"camera": "/camera/image_raw"}, command_topic=None) as w:
        for k in range(300):
            t = T0 + 10 * MS * k
            w.joint_state(t, NAMES, q_of(t))
        for k in range(30):
            w.image(T0 + 100 * MS * k, frame_of(k))
    spec = parse_spec({"action": {"source": "measured", "lead_s": 0.2}})
    ep = read_episode(path, 0.1, NAMES, spec=spec)
    grid = T0 + 100 * MS * np.arange(len(ep))
    assert len(ep) == 28  # the last 0.2 s have no future to predict
    np.testing.assert_allclose(ep.actions, q_of(grid + 200 * MS), atol=1e-6)
    # Without lead_s the lead is one action_dt.
    ep = read_episode(path, 0.1, NAMES, spec=parse_spec({"action": {"source": "measured"}}))
    np.testing.assert_allclose(ep.actions, ep.joints + 0.1 * 0.2 * np.arange(1, 8), atol=1e-6)
    # The default spec wants commands this bag does not have.
    with pytest.raises(ValueError, match="lacks topics"):
        read_episode(path, 0.1, NAMES)


@pytest.mark.parametrize("kind", ["std_msgs/msg/Bool", "std_msgs/msg/String"])
def test_marker_topic_splits_episodes(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "session"
    with BagWriter(path, marker_topic="/episode", marker_type=kind) as w:
        if kind.endswith("Bool"):
            marks = [(0, True), (1000, False), (1500, True)]
        else:
            marks = [(0, "a"), (1500, "b")]
        for t_ms, value in marks:
            w.marker(T0 + t_ms * MS, value)
        for k in range(300):
            t = T0 + 10 * MS * k
            w.joint_state(t, NAMES, q_of(t))
            w.command(t, q_of(t))
            if k % 5 == 0:
                w.image(t, frame_of(k // 5))
    spec = parse_spec({"episodes": {"split": "marker", "marker_topic": "/episode"}})
    eps = read_episodes(path, 0.1, NAMES, spec=spec)
    assert len(eps) == 2
    first = 10 if kind.endswith("Bool") else 15  # Bool False closed the first at 1.0 s
    assert [len(e) for e in eps] == [first, 15]
    assert eps[1].meta["t0"] == pytest.approx((T0 + 1500 * MS) / 1e9)
    np.testing.assert_allclose(eps[1].joints[0], q_of(T0 + 1500 * MS), atol=1e-6)
    with pytest.raises(ValueError, match="read_episodes"):
        read_episode(path, 0.1, NAMES, spec=spec)


def test_spec_file_parsing(tmp_path: Path) -> None:
    assert load_spec(None) == DataSpec() and DataSpec().is_default
    f = tmp_path / "spec.yaml"
    f.write_text(
        "joint_states: {topic: /joint_states}\n"
        "action: {source: measured, lead_s: 0.1}\n"
        "cameras: {wrist: /wrist/image_raw/compressed}\n"
        "alignment: {tolerance_s: 0.02}\n"
        "episodes: {marker_topic: /episode}\n"
        "gripper: null\n"
    )
    spec = load_spec(f)
    assert spec.action.source == "measured" and spec.action.resolved_lead(0.5) == 0.1
    assert spec.cameras == {"wrist": "/wrist/image_raw/compressed"}
    assert spec.split == "marker" and spec.tolerance_s == 0.02 and spec.path == str(f)
    assert parse_spec(spec.to_dict()) == DataSpec(**{**spec.__dict__, "path": None})
    bad = {
        "gripper: {source: effort}": "gripper.source must be one of",
        "action: {source: teleop}": "action.source must be one of",
        "action: {source: measured, lead_s: 0}": "must be > 0",
        "actions: {}": r"unknown keys \['actions'\]",
        "alignment: {tolerance_s: -1}": "positive",
        "episodes: {split: marker}": "needs episodes.marker_topic",
        "cameras: {wrist: ''}": "non-empty string",
        "joint_states: [a]": "must be a mapping",
    }
    for text, match in bad.items():
        f.write_text(text + "\n")
        with pytest.raises(SpecError, match=match):
            load_spec(f)
    f.write_text("action: {source: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(f)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "absent.yaml")
