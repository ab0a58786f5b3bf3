"""Gripper data without torch: a rosbag2 recording with finger joint states and gripper commands
is read into arm + width columns, by spec or by a policy config with a gripper, and a policy with a
gripper refuses data without one. (Training on it: test_gripper_policy.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusion_controller.data.bag_writer import BagWriter
from diffusion_controller.data.gripper import WIDTH_DIM, GripperConfig
from diffusion_controller.data.loading import load_episodes
from diffusion_controller.data.spec import parse_spec
from diffusion_controller.policy.config import PolicyConfig

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
NS = 1_000_000_000


def width_at(t: float) -> float:
    """The demonstration's commanded width: open, then closing from 1 s on."""
    return 0.08 if t < 1.0 else max(0.02, 0.08 - 0.1 * (t - 1.0))


def write_bag(path: Path, seconds: float = 2.0, gripper: bool = True) -> None:
    """A pick-like recording: 100 Hz joint states (arm + fingers lagging the command by 0.05 s),
    10 Hz arm and gripper commands, 10 Hz 16x16 images."""
    with BagWriter(path, gripper_topic="/gripper_controller/commands" if gripper else None) as w:
        for k in range(int(seconds * 100) + 1):
            t = k / 100
            q = np.linspace(-0.5, 0.5, 7) + 0.1 * t
            half = width_at(max(0.0, t - 0.05)) / 2
            w.joint_state(int(t * NS) + 1, [*ARM, *FINGERS], np.r_[q, half, half],
                          np.zeros(9))
            if k % 10 == 0:
                w.command(int(t * NS) + 1, q + 0.01)
                if gripper:
                    w.gripper_command(int(t * NS) + 1, np.full(2, width_at(t) / 2))
                w.image(int(t * NS) + 1, np.full((16, 16, 3), 40 + k % 200, np.uint8))


def tiny_config(**extra) -> PolicyConfig:
    return PolicyConfig.cpu_default(
        ARM, image_size=(16, 16), n_obs_steps=2, horizon=8, n_action_steps=4,
        encoder={"variant": "small", "width": 8, "group_size": 8, "num_keypoints": 4,
                 "feature_dim": 8},
        unet={"down_dims": [16, 32], "n_groups": 4, "step_embed_dim": 16, "kernel_size": 3},
        **extra)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gripper") / "demo"
    write_bag(path)
    return path


def test_a_recording_with_a_gripper_reads_into_arm_and_width_columns(bag: Path) -> None:
    spec = parse_spec({"gripper": {}})
    (ep,) = load_episodes(bag, action_dt=0.1, joint_names=ARM, cameras=["camera"], spec=spec)
    assert ep.joint_names == [*ARM, WIDTH_DIM]
    assert ep.joints.shape == ep.actions.shape == (len(ep), 8)
    assert ep.meta["gripper"] == GripperConfig().to_dict()
    t = ep.stamps + ep.meta["t0"]
    # action: the gripper command in force; state: the measured fingers' sum (0.05 s behind)
    np.testing.assert_allclose(ep.actions[:, 7], [width_at(round(x, 3)) for x in t], atol=1e-6)
    np.testing.assert_allclose(ep.joints[:, 7], [width_at(max(0.0, x - 0.05)) for x in t],
                               atol=2e-3)
    assert ep.actions[0, 7] == pytest.approx(0.08) and ep.actions[-1, 7] < 0.03
    # A policy with a gripper reads the default gripper topic without a spec.
    cfg = tiny_config(gripper=GripperConfig())
    (same,) = load_episodes(bag, cfg)
    np.testing.assert_array_equal(same.actions, ep.actions)
    # ... and an arm-only policy reads the same bag as before.
    (arm,) = load_episodes(bag, tiny_config())
    assert arm.joint_names == ARM and arm.actions.shape[1] == 7


def test_a_policy_with_a_gripper_needs_the_gripper_in_the_data(tmp_path: Path) -> None:
    write_bag(tmp_path / "arm_only", seconds=0.5, gripper=False)
    with pytest.raises(ValueError, match="/gripper_controller/commands"):
        load_episodes(tmp_path / "arm_only", tiny_config(gripper=GripperConfig()))
    spec = parse_spec({"gripper": {"joints": ["other_finger"], "mapping": "joints"}})
    with pytest.raises(ValueError, match="differs from the policy's"):
        load_episodes(tmp_path / "arm_only", tiny_config(gripper=GripperConfig()), spec=spec)




def test_gripper_actions_from_a_trajectory_topic_or_measured(tmp_path: Path) -> None:
    """A gripper trajectory controller's commands (first point, by joint name, in any order),
    and the measured fingers (kinesthetic teaching) as the gripper's action source."""
    topic = "/gripper_trajectory_controller/joint_trajectory"
    path = tmp_path / "traj"
    with BagWriter(path, trajectory_topic=topic) as w:
        for k in range(201):
            t = k / 100
            half = width_at(t) / 2
            w.joint_state(int(t * NS) + 1, [*ARM, *FINGERS], np.r_[np.zeros(7), half, half])
            if k % 10 == 0:
                w.command(int(t * NS) + 1, np.zeros(7))
                w.trajectory(int(t * NS) + 1, FINGERS[::-1], np.full(2, half))
                w.image(int(t * NS) + 1, np.full((16, 16, 3), 90, np.uint8))
    spec = parse_spec({"gripper": {"source": "trajectory", "topic": topic}})
    (ep,) = load_episodes(path, action_dt=0.1, joint_names=ARM, cameras=["camera"], spec=spec)
    t = ep.stamps + ep.meta["t0"]
    np.testing.assert_allclose(ep.actions[:, 7], [width_at(round(x, 3)) for x in t], atol=1e-6)
    assert ep.meta["gripper_source"] == "trajectory" and ep.meta["gripper_topic"] == topic
    spec = parse_spec({"gripper": {"source": "measured"}, "action": {"lead_s": 0.1}})
    (ep,) = load_episodes(path, action_dt=0.1, joint_names=ARM, cameras=["camera"], spec=spec)
    np.testing.assert_allclose(ep.actions[:-1, 7], ep.joints[1:, 7], atol=1e-6)  # one step ahead
