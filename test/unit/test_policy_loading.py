"""load_episodes: discovery, conforming to the config, and clear errors for unusable data."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.data.episode import Episode
from diffusion_controller.data.loading import (
    ReaderUnavailableError,
    conform_episode,
    discover,
    load_episodes,
    summarize,
)
from diffusion_controller.policy.config import PolicyConfig


def episode(names=("a", "b", "c"), t=4, dt=0.1, size=(48, 64), cams=("front", "wrist")) -> Episode:
    k = np.arange(t, dtype=np.float64)
    joints = np.stack([k * (i + 1) for i in range(len(names))], axis=1)
    images = {c: np.full((t, *size, 3), 10 * (i + 1), np.uint8) for i, c in enumerate(cams)}
    return Episode(list(names), k * dt, joints, joints + 1, images)


def cfg(**kw) -> PolicyConfig:
    base = {"cameras": ["wrist"], "image_size": (24, 32)}
    base.update(kw)
    return PolicyConfig.cpu_default(["c", "a"], **base)


def test_discovers_npz_files_and_bag_directories(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    episode().save(tmp_path / "e1.npz")
    episode().save(tmp_path / "sub" / "e0.npz")
    bag = tmp_path / "bag1"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (bag / "inner.npz").write_bytes(b"")  # inside a bag: not an episode of its own
    (tmp_path / "notes.txt").write_text("x")
    found = discover(tmp_path)
    assert [k for k, _ in found] == ["bag", "npz", "npz"]
    assert found[1][1].endswith("e1.npz") and found[2][1].endswith("e0.npz")
    assert discover(bag) == [("bag", str(bag))]
    assert discover(tmp_path / "e1.npz") == [("npz", str(tmp_path / "e1.npz"))]
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "missing")
    with pytest.raises(ValueError, match="not an episode"):
        discover(tmp_path / "notes.txt")


def test_conforms_joint_order_cameras_and_image_size(tmp_path) -> None:
    episode().save(tmp_path / "e.npz")
    (ep,) = load_episodes(tmp_path, cfg())
    assert ep.joint_names == ["c", "a"]
    np.testing.assert_array_equal(ep.joints[:, 0], np.arange(4) * 3)
    np.testing.assert_array_equal(ep.actions[:, 1], np.arange(4) + 1)
    assert list(ep.images) == ["wrist"]
    assert ep.images["wrist"].shape == (4, 24, 32, 3) and np.all(ep.images["wrist"] == 20)
    assert ep.meta["source"].endswith("e.npz")


def test_without_config_reorders_to_the_first_episode(tmp_path) -> None:
    episode(("a", "b", "c")).save(tmp_path / "e0.npz")
    episode(("c", "a", "b")).save(tmp_path / "e1.npz")
    eps = load_episodes(tmp_path)
    assert [e.joint_names for e in eps] == [["a", "b", "c"]] * 2
    np.testing.assert_array_equal(eps[1].joints[:, 0], np.arange(4) * 2)
    s = summarize(eps)
    assert s["episodes"] == 2 and s["frames"] == 8 and s["cameras"] == ["front", "wrist"]
    episode(("x", "y", "z")).save(tmp_path / "e2.npz")
    with pytest.raises(ValueError, match=r"e2\.npz"):
        load_episodes(tmp_path)


@pytest.mark.parametrize(
    ("ep", "match"),
    [
        (episode(("a", "b")), r"joints \['c'\] are missing"),
        (episode(cams=("front",)), r"cameras \['wrist'\] are missing"),
        (episode(dt=0.05), "grid spacing"),
    ],
)
def test_data_that_does_not_fit_is_rejected(tmp_path, ep, match) -> None:
    ep.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=match):
        load_episodes(tmp_path, cfg())
    with pytest.raises(ValueError, match=match):
        conform_episode(ep, cfg())


def test_corrupt_files_raise_or_are_skipped(tmp_path) -> None:
    episode().save(tmp_path / "good.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match=r"corrupt\.npz"):
        load_episodes(tmp_path, cfg())
    with pytest.warns(UserWarning, match="corrupt.npz"):
        eps = load_episodes(tmp_path, cfg(), skip_bad=True)
    assert len(eps) == 1


def test_empty_inputs(tmp_path) -> None:
    with pytest.raises(ValueError, match="no episodes"):
        load_episodes(tmp_path, cfg())
    (tmp_path / "bad.npz").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable episodes"):
        load_episodes(tmp_path, cfg(), skip_bad=True)


def test_a_broken_bag_names_the_bag(tmp_path) -> None:
    bag = tmp_path / "rec"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("not: [a, valid, bag")
    with pytest.raises((ValueError, ReaderUnavailableError), match="rec"):
        load_episodes(tmp_path, cfg())


def write_bag(path, names=("a", "b", "c"), seconds=1.0) -> None:
    pytest.importorskip("rosbags", reason="rosbag2 recordings are written with rosbags")
    from diffusion_controller.data.rosbag_io import BagWriter

    ms = 1_000_000
    t0 = 1_700_000_000 * 1_000_000_000
    with BagWriter(path, task_topic=None) as w:
        for k in range(int(seconds * 100) + 1):
            t = t0 + 10 * ms * k
            q = np.full(len(names), 0.01 * k)
            w.command(t, q + 0.1)
            w.joint_state(t, list(names), q)
            if k % 5 == 0:
                w.image(t, np.full((48, 64, 3), 40, np.uint8), encoding="rgb8")


def test_reads_rosbag2_recordings_conformed_to_the_config(tmp_path) -> None:
    write_bag(tmp_path / "rec0")
    episode(cams=("camera",)).save(tmp_path / "zz.npz")
    config = PolicyConfig.cpu_default(["a", "b", "c"], image_size=(24, 32))
    eps = load_episodes(tmp_path, config)
    assert len(eps) == 2
    bag = eps[0]
    assert bag.meta["source"].endswith("rec0") and bag.joint_names == ["a", "b", "c"]
    assert bag.dt == pytest.approx(0.1) and len(bag) >= 9
    assert bag.images["camera"].shape[1:] == (24, 32, 3)
    np.testing.assert_allclose(bag.actions - bag.joints, 0.1, atol=0.011)
    # Without a config the joint names must come from somewhere: commands carry none.
    with pytest.raises(ValueError, match="joint names"):
        load_episodes(tmp_path / "rec0")
    (raw,) = load_episodes(tmp_path / "rec0", joint_names=["a", "b", "c"], action_dt=0.05)
    assert raw.dt == pytest.approx(0.05) and raw.images["camera"].shape[1:] == (48, 64, 3)
