"""One declaration: the core's config objects carry the settings' names and no defaults of their
own for them, take their ranges from the table, and are built from settings values by name; the
simulated arm's settings are a table of the same kind."""

from __future__ import annotations

import dataclasses

import pytest

from diffusion_controller.control import assembly
from diffusion_controller.control.chunk_scheduler import SchedulerConfig
from diffusion_controller.control.safety_filter import LIVE_FIELDS, SafetyConfig
from diffusion_controller.control.safety_filter.config import LIMIT_FIELDS
from diffusion_controller.control.watchdogs import WatchdogConfig
from diffusion_controller.runtime import loading
from diffusion_controller.runtime.worker import WorkerSettings, worker_settings
from diffusion_controller.settings import sim
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.spec import build
from diffusion_controller.sim import tasks
from diffusion_controller.sim.perturbation import Perturbation

CONFIGS = (SafetyConfig, SchedulerConfig, WatchdogConfig, WorkerSettings)
# The settings each core config takes (every one of them under the setting's own name).
TAKES = {
    SafetyConfig: {"control_rate_hz", "safety_mode", "mpc_horizon", "mpc_inputs",
                   "position_margin", "velocity_scale", "acceleration_scale", "jerk_scale",
                   "workspace_min", "workspace_max", "table_z", "obstacles", "sphere_margin",
                   "self_collision_pairs", "tool_links", "tool_clearance", "grasp_objects",
                   "grasp_margin"},
    SchedulerConfig: {"latency_margin", "blend_time", "chunk_timeout", "stamp_tolerance"},
    WatchdogConfig: {"joint_state_timeout", "image_timeout", "chunk_timeout",
                     "tracking_error_limit", "stamp_tolerance"},
    WorkerSettings: {"inference_rate_hz", "ddim_steps", "eta", "warm_start",
                     "warm_start_strength", "prefix_steps", "latency_margin", "num_samples", "seed",
                     "image_timeout", "uncertainty_threshold", "uncertainty_action",
                     "uncertainty_scale", "inference_frame_wait"},
}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_core_configs_take_settings_by_name_without_defaults(cls) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert TAKES[cls] <= set(fields), sorted(TAKES[cls] - set(fields))
    for name in fields:
        if name in SPECS:
            f = fields[name]
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (
                f"{cls.__name__}.{name} carries a default of its own: the table's is the one")
    assert {n for n in fields if n in SPECS} == TAKES[cls]


def test_assembly_builds_every_config_from_the_table_defaults() -> None:
    values = assembly.default_values()
    safety = assembly.safety_config(values)
    assert safety.velocity_scale == SPECS["velocity_scale"].default
    assert safety.self_collision_pairs and safety.workspace_min == (-1.2, -1.2, -0.5)
    assert assembly.scheduler_config(values).blend_time == SPECS["blend_time"].default
    wd = assembly.watchdog_config(values)
    assert (wd.chunk_timeout, wd.stamp_tolerance) == (SPECS["chunk_timeout"].default,
                                                      SPECS["stamp_tolerance"].default)
    assert worker_settings(values).inference_frame_wait == \
        SPECS["inference_frame_wait"].default
    with pytest.raises(TypeError, match="unknown settings"):
        assembly.default_values(blend_window=0.2)  # a typo never leaves a default in force
    with pytest.raises(TypeError, match="come from the values"):
        build(SchedulerConfig, values, SPECS, blend_time=0.3)


@pytest.mark.parametrize(
    ("cls", "field", "value", "fragment"),
    [
        (SafetyConfig, "mpc_horizon", 60, "above the maximum 50"),  # the core allowed 100
        (SafetyConfig, "velocity_scale", 0.0, "below the minimum 0.01"),
        (SafetyConfig, "safety_mode", "lqr", "not one of"),
        (SchedulerConfig, "blend_time", 2.5, "above the maximum 2"),
        (WatchdogConfig, "tracking_error_limit", 0.001, "below the minimum"),
        (WorkerSettings, "uncertainty_action", "panic", "not one of scale, hold, report"),
        (WorkerSettings, "inference_rate_hz", float("nan"), "not finite"),
    ],
)
def test_ranges_come_from_the_table(cls, field: str, value, fragment: str) -> None:
    built = {
        SafetyConfig: assembly.safety_config, SchedulerConfig: assembly.scheduler_config,
        WatchdogConfig: assembly.watchdog_config, WorkerSettings: worker_settings,
    }[cls](assembly.default_values())
    with pytest.raises(ValueError, match=fragment) as err:
        dataclasses.replace(built, **{field: value})
    assert f"{cls.__name__}.{field}" in str(err.value)


def test_cross_field_invariants_stay_in_the_core() -> None:
    cfg = assembly.safety_config(assembly.default_values())
    with pytest.raises(ValueError, match="mpc_inputs 8 must not exceed mpc_horizon 6"):
        dataclasses.replace(cfg, mpc_horizon=6, mpc_inputs=8)


def test_live_fields_are_the_tables_live_settings_less_the_limits() -> None:
    live_settings = {n for n in TAKES[SafetyConfig] if SPECS[n].live}
    assert live_settings - LIMIT_FIELDS <= LIVE_FIELDS
    assert not LIMIT_FIELDS & LIVE_FIELDS
    assert not {n for n in TAKES[SafetyConfig] if not SPECS[n].live} & LIVE_FIELDS
    assert assembly.live_safety_settings() == live_settings


def test_backend_choices_are_the_tables() -> None:
    assert SPECS["backend"].choices == ("auto", *loading.BACKENDS)
    with pytest.raises(ValueError, match="unknown backend"):
        loading.parse_backend("tflite")


def test_sim_table_defaults_valid_and_checks() -> None:
    assert sim.validate(sim.defaults()) == []
    assert sim.check_update(sim.defaults(), {"seed": 7, "image_delay": 0.1}) == []
    errors = sim.check_update(sim.defaults(), {"rate_hz": 50.0, "seed": -1,
                                               "episode_timeout": 0.2, "colour": "red"})
    assert any("rate_hz is read only" in e for e in errors)
    assert any("seed: -1 is below the minimum 0" in e for e in errors)
    assert any("unknown parameter 'colour'" in e for e in errors)
    assert any("0 or in [0.5, 3600]" in e for e in sim.check_update(
        sim.defaults(), {"episode_timeout": 0.2}))
    bad = dict(sim.defaults(), timestep=0.02, rate_hz=100.0)
    assert any("above the maximum" in e for e in sim.validate(bad))
    bad = dict(sim.defaults(), timestep=0.008, rate_hz=200.0)
    assert any("must not exceed one tick" in e for e in sim.validate(bad))


def test_the_perturbation_takes_defaults_and_ranges_from_the_sim_table() -> None:
    none = Perturbation()
    for name, value in none.to_dict().items():
        assert value == sim.SIM_SPECS[name].default, name
    assert set(none.to_dict()) == set(sim.PERTURBATION_SETTINGS)
    with pytest.raises(ValueError, match=r"image_delay: 2\.0 is above the maximum 1"):
        Perturbation.from_dict({"image_delay": 2.0})
    with pytest.raises(ValueError, match=r"at most 0\.2 m long"):
        Perturbation.from_dict({"obstacle_shift": [0.3, 0.0]})


def test_the_sim_tables_task_names_are_the_registrys() -> None:
    assert sim.TASK_NAMES == tasks.TASK_NAMES
    assert sim.SIM_SPECS["task"].choices == tasks.TASK_NAMES
    assert sim.SIM_SPECS["task"].default == tasks.DEFAULT_TASK


def test_image_freeze_is_a_switch_in_the_table_and_the_perturbation() -> None:
    assert "image_freeze" in sim.PERTURBATION_SETTINGS
    assert sim.check_update(sim.defaults(), {"image_freeze": 1.0}) == []
    assert any("image_freeze must be 0 or 1" in e
               for e in sim.check_update(sim.defaults(), {"image_freeze": 0.5}))
    assert Perturbation.from_dict({"image_freeze": 1.0}).active
    with pytest.raises(ValueError, match="image_freeze must be 0 or 1"):
        Perturbation.from_dict({"image_freeze": 0.5})
