"""The gripper as policy dimensions: mapping, config round trips, old configs, the data spec."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_controller.data.gripper import WIDTH_DIM, GripperConfig
from diffusion_controller.data.spec import SpecError, parse_spec
from diffusion_controller.policy.config import PolicyConfig

ARM = [f"panda_joint{i}" for i in range(1, 8)]


def test_width_mapping_sums_the_fingers_and_splits_the_command_evenly() -> None:
    g = GripperConfig()
    assert g.joints == ["panda_finger_joint1", "panda_finger_joint2"]
    assert g.dim == 1 and g.dim_names == [WIDTH_DIM]
    q = np.array([[0.01, 0.012], [0.04, 0.04]])
    np.testing.assert_allclose(g.to_dims(q), [[0.022], [0.08]])
    np.testing.assert_allclose(g.to_joint_positions([0.06]), [0.03, 0.03])
    with pytest.raises(ValueError, match="last dimension"):
        g.to_dims([0.01, 0.02, 0.03])


def test_joints_mapping_is_one_dim_per_joint() -> None:
    g = GripperConfig(["a", "b", "c"], "joints")
    assert g.dim == 3 and g.dim_names == ["a", "b", "c"]
    np.testing.assert_allclose(g.to_joint_positions(g.to_dims([1.0, 2.0, 3.0])), [1, 2, 3])


@pytest.mark.parametrize("bad", [{"joints": []}, {"joints": ["a", "a"]}, {"mapping": "sum"},
                                 {"joints": "panda_finger_joint1"}, {"force": 3}])
def test_bad_gripper_configs_are_named(bad) -> None:
    with pytest.raises(ValueError, match="gripper"):
        GripperConfig.from_dict(bad)


def test_policy_config_with_gripper_round_trips_strictly() -> None:
    cfg = PolicyConfig.cpu_default(ARM, gripper=GripperConfig())
    assert cfg.arm_dim == 7 and cfg.gripper_dim == 1 and cfg.action_dim == 8
    assert cfg.dim_names == [*ARM, WIDTH_DIM]
    doc = cfg.to_dict()
    assert doc["gripper"] == {"joints": ["panda_finger_joint1", "panda_finger_joint2"],
                              "mapping": "width"}
    back = PolicyConfig.from_dict(doc, strict=True)
    assert back.gripper is not None and back.action_dim == 8 and back.to_dict() == doc


def test_a_config_without_gripper_is_written_and_read_as_before() -> None:
    cfg = PolicyConfig.cpu_default(ARM)
    doc = cfg.to_dict()
    assert "gripper" not in doc  # artifacts of arm-only models are unchanged
    back = PolicyConfig.from_dict(doc, strict=True)  # strict, yet an old config has no gripper
    assert back.gripper is None and back.action_dim == 7 and back.dim_names == ARM


def test_gripper_joints_may_not_be_arm_joints() -> None:
    with pytest.raises(ValueError, match="also arm joints"):
        PolicyConfig.cpu_default(ARM, gripper=GripperConfig(["panda_joint7"], "joints"))
    with pytest.raises(ValueError, match="clash"):
        PolicyConfig.cpu_default([*ARM, WIDTH_DIM], gripper=GripperConfig())


def test_spec_gripper_defaults_and_checks() -> None:
    spec = parse_spec({"gripper": {}})
    assert spec.gripper is not None
    assert spec.gripper.config.to_dict() == GripperConfig().to_dict()
    assert spec.gripper.source == "commands"
    assert spec.gripper.action_topic("/joint_states") == "/gripper_controller/commands"
    assert spec.to_dict()["gripper"]["mapping"] == "width"
    traj = parse_spec({"gripper": {"source": "trajectory", "topic": "/g/traj"}})
    assert traj.gripper is not None and traj.gripper.action_topic("/js") == "/g/traj"
    assert parse_spec({"gripper": {"source": "measured"}}).gripper.action_topic("/js") == "/js"
    assert parse_spec({}).gripper is None
    for bad, match in (({"gripper": {"source": "x"}}, "gripper.source"),
                       ({"gripper": {"mapping": "x"}}, "gripper.mapping"),
                       ({"gripper": {"joints": []}}, "gripper.joints"),
                       ({"gripper": {"width": 1}}, "unknown keys")):
        with pytest.raises(SpecError, match=match):
            parse_spec(bad)
