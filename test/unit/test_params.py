"""The parameter table: defaults valid, ranges and consistency checks, docs in sync."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from diffusion_controller.ros import params
from diffusion_controller.ros.params import ModelFacts
from diffusion_controller.settings import docs, sim, spec
from diffusion_controller.settings.panda import PANDA_JOINT_NAMES

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelFacts(horizon=16, action_dt=0.1, num_train_timesteps=100,
                   joint_names=tuple(PANDA_JOINT_NAMES), cameras=("camera",))


def test_names_unique_and_defaults_valid() -> None:
    names = [p.name for p in params.PARAMS]
    assert len(names) == len(set(names))
    assert params.validate(params.defaults()) == []
    assert params.validate(params.defaults(), MODEL) == []


def test_every_spec_is_documented_and_typed() -> None:
    for p in params.PARAMS:
        assert p.description.strip(), p.name
        assert p.when in (params.LIVE, params.ON_CONFIGURE, params.READ_ONLY)
        assert p.group
        if p.choices:
            assert p.default in p.choices


def test_required_parameters_present() -> None:
    required = {
        "control_rate_hz", "inference_rate_hz", "ddim_steps", "eta", "warm_start",
        "warm_start_strength", "prefix_steps", "num_samples", "uncertainty_threshold",
        "uncertainty_action", "backend", "model_path", "fp16", "engine_cache_dir", "joint_names",
        "position_margin", "velocity_scale", "acceleration_scale", "safety_mode", "mpc_horizon",
        "obstacles", "workspace_min", "workspace_max", "table_z", "joint_state_timeout",
        "image_timeout", "chunk_timeout", "latency_margin", "blend_time", "command_interface",
        "urdf_path", "autostart", "realtime", "diagnostics_rate", "publish_markers",
    }
    assert required <= set(params.SPECS)
    assert params.SPECS["control_rate_hz"].read_only
    assert params.SPECS["inference_rate_hz"].live
    assert params.SPECS["ddim_steps"].live
    assert (params.SPECS["ddim_steps"].min, params.SPECS["ddim_steps"].max) == (1, 100)
    for live in ("obstacles", "workspace_min", "table_z", "position_margin", "velocity_scale",
                 "joint_state_timeout", "image_timeout", "chunk_timeout"):
        assert params.SPECS[live].live, live


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"ddim_steps": 0}, "below the minimum 1"),
        ({"ddim_steps": 101}, "above the maximum 100"),
        ({"ddim_steps": 2.5}, "expected integer"),
        ({"eta": math.nan}, "not finite"),
        ({"backend": "cuda"}, "not one of"),
        ({"command_interface": "effort"}, "not one of"),
        ({"velocity_scale": 1.5}, "above the maximum"),
        ({"workspace_min": [0.0, 0.0, 2.0]}, "must be below workspace_max"),
        ({"workspace_min": [0.0, 0.0]}, "need 3 values"),
        ({"workspace_max": [1.0, 1.0, math.inf]}, "NaN or Inf"),
        ({"table_z": 1.7}, "must be below workspace_max z"),
        ({"table_z": 2.5}, "above the maximum"),
        ({"obstacles": [0.5, 0.0, 0.3, 0.1, 0.2]}, "multiple of 4"),
        ({"obstacles": [0.5, 0.0, 0.3, -0.1]}, "radius must be positive"),
        ({"joint_names": ["a", "a"]}, "unique"),
        ({"joint_names": []}, "must not be empty"),
        ({"image_topics": []}, "at least one"),
        ({"mpc_horizon": 4, "mpc_inputs": 5}, "must not exceed mpc_horizon"),
        ({"nonexistent": 3}, "unknown parameter"),
    ],
)
def test_rejections_carry_reasons(changes: dict, fragment: str) -> None:
    errors = params.check_update(params.defaults(), changes)
    assert errors, changes
    assert any(fragment in e for e in errors), errors


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"prefix_steps": 16}, "below the model's horizon 16"),
        ({"ddim_steps": 100, "inference_rate_hz": 10.0}, None),
        ({"inference_rate_hz": 0.6}, "cannot fit the model's chunk"),
        ({"joint_names": ["j1", "j2"]}, "not the model's joints"),
        ({"image_topics": ["/a", "/b"]}, "2 topics for the model's 1 cameras"),
    ],
)
def test_model_consistency(changes: dict, fragment: str | None) -> None:
    errors = params.check_update(params.defaults(), changes, MODEL)
    if fragment is None:
        assert errors == []
    else:
        assert any(fragment in e for e in errors), errors


def test_ddim_steps_cannot_exceed_training_timesteps() -> None:
    small = ModelFacts(horizon=16, action_dt=0.1, num_train_timesteps=50)
    errors = params.check_update(params.defaults(), {"ddim_steps": 60}, small)
    assert any("50 training timesteps" in e for e in errors)


def test_valid_update_accepted() -> None:
    changes = {"obstacles": [0.5, 0.0, 0.3, 0.1, 0.4, 0.2, 0.3, 0.05], "ddim_steps": 4,
               "workspace_min": [-0.5, -0.5, 0.0], "inference_rate_hz": 5.0}
    assert params.check_update(params.defaults(), changes, MODEL) == []
    assert params.obstacle_tuples(changes["obstacles"]) == [
        (0.5, 0.0, 0.3, 0.1), (0.4, 0.2, 0.3, 0.05)]


def test_docs_parameters_md_up_to_date() -> None:
    text = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    assert text == docs.markdown(), f"docs/parameters.md is stale: run `{docs.COMMAND}`"
    for p in (*params.PARAMS, *sim.SIM_PARAMS):
        assert f"`{p.name}`" in text


@pytest.mark.parametrize(("table", "section"), [(params.PARAMS, "/**"),
                                                (sim.SIM_PARAMS, sim.NODE_NAME)])
def test_yaml_defaults_parse_back(table, section: str) -> None:
    data = yaml.safe_load(spec.yaml_defaults(table, section))
    values = data[section]["ros__parameters"]
    for p in table:
        if p.default == []:
            assert p.name not in values
        else:
            assert values[p.name] == p.default, p.name

