"""`diffusion-controller record` end to end: bags on disk, read back as Episodes, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffusion_controller.cli import main
from diffusion_controller.data.rosbag_io import is_bag_dir, read_episode, read_task_messages
from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.task import TaskSpec, sample_task


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bags")
    summary = out / "summary.json"
    rc = main(
        ["record", "--episodes", "2", "--out", str(out), "--first-seed", "4",
         "--image-size", "48", "--json", str(summary)]
    )  # fmt: skip
    assert rc == 0
    return out, json.loads(summary.read_text())


def test_two_episodes_on_disk(recorded: tuple[Path, dict]) -> None:
    out, report = recorded
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == ["episode_000004", "episode_000005"]
    assert all(is_bag_dir(out / d) for d in dirs)
    assert report["summary"]["recorded"] == 2 and report["summary"]["success"] == 2
    meta = (out / dirs[0] / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta
    for topic in ("/camera/image_raw", "/joint_states", "/forward_position_controller/commands",
                  "/sim/task"):  # fmt: skip
        assert f"name: {topic}" in meta


def test_read_back_matches_the_recording(recorded: tuple[Path, dict]) -> None:
    out, report = recorded
    for row, seed in zip(report["episodes"], (4, 5), strict=True):
        ep = read_episode(out / f"episode_{seed:06d}", 0.1, list(ARM_JOINTS))
        n = len(ep)
        assert ep.dt == pytest.approx(0.1)
        assert 40 <= n <= 100  # 4-10 s of demonstration
        assert ep.joints.shape == (n, 7) and ep.actions.shape == (n, 7)
        assert ep.images["camera"].shape == (n, 48, 48, 3)
        # Position control tracks the commands: measured joints follow the action stream closely.
        assert np.abs(ep.actions - ep.joints).max() < 0.03
        # The arm starts at the task's start pose and ends settled at the last command.
        spec = TaskSpec.from_dict(ep.meta["task"])
        assert spec.to_json() != ""
        np.testing.assert_allclose(ep.joints[0], sample_task(seed).start_q, atol=2e-3)
        np.testing.assert_allclose(ep.joints[-1], ep.actions[-1], atol=5e-3)
        outcome = ep.meta["task"]["outcome"]
        assert outcome["success"] and outcome["side"] == row["side"]
        assert ep.meta["task"]["extra"]["demonstrator"]["side"] == row["side"]
        rates = ep.meta["rates_hz"]
        assert rates["joint_states"] == pytest.approx(100.0, rel=0.01)
        assert rates["commands"] == pytest.approx(100.0, rel=0.01)
        assert rates["images.camera"] == pytest.approx(15.0, rel=0.05)
        # Frames change as the arm moves.
        frames = ep.images["camera"].astype(int)
        assert np.abs(frames[-1] - frames[0]).sum() > 0
        assert len(read_task_messages(out / f"episode_{seed:06d}")) == 2


def test_resume_skips_complete_episodes(recorded: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = recorded
    mtime = (out / "episode_000004" / "metadata.yaml").stat().st_mtime_ns
    # A leftover from an interrupted run is discarded, never mistaken for an episode.
    (out / ".partial" / "episode_000005").mkdir(parents=True)
    summary = tmp_path / "again.json"
    rc = main(["record", "--episodes", "2", "--out", str(out), "--first-seed", "4",
               "--image-size", "48", "--json", str(summary)])  # fmt: skip
    assert rc == 0
    report = json.loads(summary.read_text())
    assert report["summary"]["resumed"] == 2 and report["summary"]["recorded"] == 0
    assert [r["status"] for r in report["episodes"]] == ["resumed", "resumed"]
    assert all(r["success"] for r in report["episodes"])
    assert (out / "episode_000004" / "metadata.yaml").stat().st_mtime_ns == mtime
    assert not (out / ".partial").exists()


def test_a_concurrent_recorder_keeps_its_partial_episode(recorded: tuple[Path, dict]) -> None:
    """Two recorders on disjoint seed ranges may share one output directory (one per core): a run
    that ends clears only its own seeds' partial episodes, never another's in-flight one."""
    out, _ = recorded
    other = out / ".partial" / "episode_000099"  # being written by another recorder
    (other / "sub").mkdir(parents=True)
    rc = main(["record", "--episodes", "1", "--out", str(out), "--first-seed", "4",
               "--image-size", "48", "--quiet"])  # fmt: skip
    assert rc == 0
    assert other.is_dir() and (other / "sub").is_dir()
    shutil.rmtree(out / ".partial")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    assert main(["record", "--episodes", "0", "--out", str(tmp_path)]) == 2
    assert main(["record", "--episodes", "1", "--out", str(tmp_path), "--image-size", "2"]) == 2
