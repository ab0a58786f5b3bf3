"""PolicyConfig: presets, JSON round trip, and validation that names the bad field."""

from __future__ import annotations

import json
import sys

import pytest

from diffusion_controller.policy.config import (
    DiffusionConfig,
    EncoderConfig,
    PolicyConfig,
    UNetConfig,
)

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]


@pytest.mark.parametrize("preset", [PolicyConfig.cpu_default, PolicyConfig.paper])
def test_presets_round_trip_through_json(preset) -> None:
    cfg = preset(JOINTS)
    again = PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), strict=True)
    assert again == cfg
    assert again.action_dim == 7


def test_defaults_match_the_contract() -> None:
    cfg = PolicyConfig(joint_names=JOINTS)
    assert cfg.kind == "diffusion" and cfg.cameras == ["camera"] and cfg.image_size == (96, 96)
    assert (cfg.n_obs_steps, cfg.horizon, cfg.action_dt, cfg.n_action_steps) == (2, 16, 0.1, 8)
    d = cfg.diffusion
    assert (d.num_train_timesteps, d.beta_schedule, d.clip_sample, d.clip_sample_range) == (
        100,
        "squaredcos_cap_v2",
        True,
        1.0,
    )
    assert (d.prediction_type, d.inference_steps, d.eta) == ("epsilon", 8, 0.0)
    assert PolicyConfig.paper(JOINTS).unet.down_dims == [256, 512, 1024]
    assert PolicyConfig.paper(JOINTS).encoder.variant == "resnet18"


def test_presets_accept_overrides() -> None:
    cfg = PolicyConfig.cpu_default(JOINTS, kind="regression", horizon=8, cameras=["a", "b"])
    assert cfg.kind == "regression" and cfg.horizon == 8 and cfg.cameras == ["a", "b"]


def test_partial_dict_fills_defaults_unless_strict() -> None:
    cfg = PolicyConfig.from_dict({"joint_names": ["a", "b"], "unet": {"down_dims": [16, 32]}})
    assert cfg.unet.kernel_size == 5 and cfg.unet.down_dims == [16, 32]
    with pytest.raises(ValueError, match="missing keys"):
        PolicyConfig.from_dict({"joint_names": ["a", "b"]}, strict=True)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"kind": "transformer"}, "kind"),
        ({"joint_names": []}, "joint_names"),
        ({"joint_names": ["a", "a"]}, "duplicate"),
        ({"joint_names": "abc"}, "joint_names"),
        ({"cameras": [""]}, "cameras"),
        ({"image_size": [96]}, "image_size"),
        ({"image_size": [4, 96]}, "image_size"),
        ({"n_obs_steps": 0}, "n_obs_steps"),
        ({"horizon": 10}, "divisible"),
        ({"horizon": 16.5}, "horizon"),
        ({"action_dt": 0.0}, "action_dt"),
        ({"action_dt": float("nan")}, "action_dt"),
        ({"n_action_steps": 17}, "n_action_steps"),
        ({"unet": {"down_dims": [30, 64]}}, "n_groups"),
        ({"unet": {"kernel_size": 4}}, "odd"),
        ({"unet": {"down_dims": []}}, "down_dims"),
        ({"encoder": {"variant": "vit"}}, "variant"),
        ({"encoder": {"width": 0}}, "width"),
        ({"diffusion": {"beta_schedule": "cubic"}}, "beta_schedule"),
        ({"diffusion": {"inference_steps": 101}}, "inference_steps"),
        ({"diffusion": {"eta": 1.5}}, "eta"),
        ({"diffusion": {"prediction_type": "x"}}, "prediction_type"),
        ({"diffusion": {"clip_sample": "yes"}}, "clip_sample"),
        ({"diffusion": {"num_train_timesteps": float("inf")}}, "num_train_timesteps"),
        ({"colour": "red"}, "unknown keys"),
        ({"unet": {"depth": 3}}, "unknown keys"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(change, match) -> None:
    data = PolicyConfig.cpu_default(JOINTS).to_dict()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(ValueError, match=match):
        PolicyConfig.from_dict(data)


def test_regression_kind_ignores_unet_horizon_constraint() -> None:
    cfg = PolicyConfig.cpu_default(JOINTS, kind="regression", horizon=10)
    assert cfg.horizon == 10


def test_sub_configs_round_trip() -> None:
    for cls in (EncoderConfig, UNetConfig, DiffusionConfig):
        obj = cls()
        assert cls.from_dict(obj.to_dict(), strict=True) == obj


def test_config_module_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys; import diffusion_controller.policy.config, "
        "diffusion_controller.policy.normalize, diffusion_controller.policy.preprocess, "
        "diffusion_controller.policy.schedule, diffusion_controller.policy.ddim, "
        "diffusion_controller.policy.artifact; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
