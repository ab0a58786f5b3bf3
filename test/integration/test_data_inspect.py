"""`diffusion-controller data inspect` on simulator recordings and rosbags-written FR3-style bags,
and `train --spec` / `train --data <LeRobot dataset>` end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from diffusion_controller.cli import main
from diffusion_controller.data.rosbag_io import read_episode
from diffusion_controller.sim.kinematics import ARM_JOINTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_data_spec import NAMES, SPEC, TRAJ, write_fr3


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    assert main(["record", "--episodes", "1", "--out", str(out), "--image-size", "48"]) == 0
    return out


def _inspect(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, dict]:
    rc = main(["data", "inspect", *args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_inspect_a_simulator_recording(sim_bags: Path, capsys) -> None:
    rc, report = _inspect([str(sim_bags)], capsys)
    assert rc == 0 and report["problems"] == []
    (rec,) = report["recordings"]
    topics = {t["topic"]: t for t in rec["topics"]}
    assert rec["storage"] == "mcap"
    assert topics["/joint_states"]["rate_hz"] == pytest.approx(100.0, rel=0.01)
    assert topics["/camera/image_raw"]["rate_hz"] == pytest.approx(15.0, rel=0.02)
    assert topics["/joint_states"]["stamped"] and not topics["/sim/task"]["stamped"]
    assert rec["clock"]["worst_diff_ms"] == pytest.approx(0.0, abs=1e-6)
    # The frames a training run would use are exactly what the training reader produces.
    ep = read_episode(Path(rec["path"]), 0.1, list(ARM_JOINTS))
    assert rec["episodes"] == 1 and rec["frames"] == len(ep)
    assert main(["data", "inspect", str(sim_bags)]) == 0
    text = capsys.readouterr().out
    assert "/joint_states" in text and f"training frames: {len(ep)}" in text


def test_inspect_reports_what_is_wrong(tmp_path: Path, capsys) -> None:
    bag = tmp_path / "fr3"
    write_fr3(bag, "sqlite3", joint_clock_ms=80)
    spec = tmp_path / "fr3.yaml"
    spec.write_text(json.dumps(SPEC))  # JSON is YAML
    # Default spec: the command topic and raw camera are absent.
    rc, report = _inspect([str(bag), "--joints", *NAMES], capsys)
    assert rc == 1 and any("lacks topics" in p for p in report["problems"])
    # With the spec: read as sqlite3, the clock disagreement is named with both topics.
    rc, report = _inspect([str(bag), "--spec", str(spec), "--joints", *NAMES], capsys)
    (rec,) = report["recordings"]
    assert rc == 1 and rec["storage"] == "sqlite3"
    assert rec["clock"]["worst_pair"] == ["/joint_states", TRAJ]
    assert rec["clock"]["worst_diff_ms"] == pytest.approx(80.0)
    assert any("disagree by 80.0 ms" in p for p in rec["problems"])
    # Without --joints the bag's own arm joints are used, with a hint for train.
    rc, report = _inspect([str(tmp_path), "--spec", str(spec)], capsys)
    assert report["recordings"][0]["plan"]["joints"] == NAMES[::-1]  # in the message's order
    assert any("--joints fr3_joint7" in p for p in report["problems"])


def test_inspect_a_lerobot_dataset(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyarrow")
    pytest.importorskip("av")
    from test_lerobot_dataset import write_v3

    write_v3(tmp_path / "ds", [6, 9], NAMES)
    rc, report = _inspect([str(tmp_path)], capsys)
    (rec,) = report["recordings"]
    assert rc == 0 and rec["kind"] == "lerobot" and rec["fps"] == 10
    assert [e["frames"] for e in rec["episode_list"]] == [6, 9] and report["problems"] == []
    assert rec["plan"]["cameras"] == {"wrist": "observation.images.wrist"}


def test_train_with_a_spec_and_on_a_lerobot_dataset(tmp_path: Path, sim_bags: Path, capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("pyarrow")
    pytest.importorskip("av")
    from test_lerobot_dataset import write_v3

    from diffusion_controller.policy.artifact import load_artifact

    spec = tmp_path / "kinesthetic.yaml"
    spec.write_text("action: {source: measured, lead_s: 0.1}\n")
    common = ["--steps", "1", "--batch-size", "2", "--horizon", "4", "--quiet"]
    out = tmp_path / "m_bag"
    assert (
        main(["train", "--data", str(sim_bags), "--spec", str(spec), "--out", str(out), *common])
        == 0
    )
    assert "--spec" in load_artifact(out).meta["training"]["command"]
    write_v3(tmp_path / "lerobot", [8, 8], NAMES)
    out = tmp_path / "m_lerobot"
    assert main(["train", "--data", str(tmp_path / "lerobot"), "--out", str(out), *common]) == 0
    art = load_artifact(out)
    assert list(art.config.joint_names) == NAMES and art.config.cameras == ["wrist"]
    assert art.config.action_dt == pytest.approx(0.1)
    gripper = tmp_path / "gripper.yaml"
    gripper.write_text("gripper: {topic: /franka_gripper/joint_states}\n")
    args = ["train", "--data", str(sim_bags), "--spec", str(gripper), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err  # the recording has no gripper commands on that topic
    assert "lacks topics" in err and "/franka_gripper/joint_states" in err
