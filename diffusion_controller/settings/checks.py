"""The checks of the controller's settings: one value against its spec, a whole set against
itself (what spans several settings: workspace corners, sphere links, rates, horizons, names) and
against the loaded model. The node's on-set-parameters callback, `load_param_file` (benches,
tests) and configure all run these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffusion_controller.settings.controller import SPECS, defaults
from diffusion_controller.settings.geometry import parse_pairs, parse_spheres
from diffusion_controller.settings.spec import check, read_param_file


@dataclass(frozen=True)
class ModelFacts:
    """What the loaded model imposes on the parameters (known only after configure)."""

    horizon: int
    action_dt: float
    num_train_timesteps: int
    joint_names: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()


def check_value(name: str, value: Any) -> str | None:
    """Reason why `value` is not admissible for setting `name` on its own, else None."""
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown parameter '{name}'"
    return check(spec, value)


def _check_consistency(v: Mapping[str, Any], model: ModelFacts | None) -> list[str]:
    errors: list[str] = []
    lo, hi = list(v["workspace_min"]), list(v["workspace_max"])
    if len(lo) != 3 or len(hi) != 3:
        errors.append(
            f"workspace_min and workspace_max need 3 values (x, y, z), got {len(lo)} and {len(hi)}"
        )
    elif any(a >= b for a, b in zip(lo, hi, strict=True)):
        errors.append(f"workspace_min {lo} must be below workspace_max {hi} on every axis")
    elif float(v["table_z"]) >= hi[2]:
        errors.append(f"table_z {v['table_z']} must be below workspace_max z {hi[2]}")
    obstacles = list(v["obstacles"])
    if len(obstacles) % 4:
        errors.append(
            f"obstacles must be a flat list x, y, z, r, ... (a multiple of 4 values), "
            f"got {len(obstacles)}"
        )
    elif any(r <= 0 for r in obstacles[3::4]):
        errors.append("obstacles: every radius must be positive")
    try:
        parse_spheres(v["collision_spheres"])
        pairs = parse_pairs(v["self_collision_pairs"])
    except ValueError as exc:
        errors.append(str(exc))
    else:
        links = set(parse_spheres(v["collision_spheres"]))
        lonely = sorted({g for p in pairs for g in p} - links)
        if lonely:
            errors.append(f"self_collision_pairs names links {lonely} without collision_spheres")
    if float(v["trajectory_rate_hz"]) > float(v["control_rate_hz"]):
        errors.append(f"trajectory_rate_hz {v['trajectory_rate_hz']} must not exceed "
                      f"control_rate_hz {v['control_rate_hz']}")
    if int(v["mpc_inputs"]) > int(v["mpc_horizon"]):
        errors.append(f"mpc_inputs {v['mpc_inputs']} must not exceed mpc_horizon "
                      f"{v['mpc_horizon']}")
    names = list(v["joint_names"])
    if not names:
        errors.append("joint_names must not be empty")
    elif len(set(names)) != len(names) or any(not n for n in names):
        errors.append(f"joint_names must be unique and non-empty: {names}")
    topics = list(v["image_topics"])
    if not topics:
        errors.append("image_topics must name at least one camera topic")
    elif len(set(topics)) != len(topics) or any(not t for t in topics):
        errors.append(f"image_topics must be unique and non-empty: {topics}")
    if model is not None:
        errors += check_against_model(v, model)
    return errors


def check_against_model(v: Mapping[str, Any], model: ModelFacts) -> list[str]:
    """Reasons why the parameters cannot work with the loaded model."""
    errors: list[str] = []
    if int(v["prefix_steps"]) >= model.horizon:
        errors.append(
            f"prefix_steps {v['prefix_steps']} must be below the model's horizon {model.horizon}"
        )
    if int(v["ddim_steps"]) > model.num_train_timesteps:
        errors.append(
            f"ddim_steps {v['ddim_steps']} exceeds the model's {model.num_train_timesteps} "
            "training timesteps"
        )
    chunk_s = (model.horizon - 1) * model.action_dt
    period = 1.0 / float(v["inference_rate_hz"])
    if period + float(v["latency_margin"]) >= chunk_s:
        errors.append(
            f"inference_rate_hz {v['inference_rate_hz']} cannot fit the model's chunk: a period "
            f"of {period:.3f} s plus latency_margin {v['latency_margin']} s is not shorter than "
            f"the chunk's {chunk_s:.3f} s"
        )
    if model.joint_names and set(model.joint_names) != set(v["joint_names"]):
        errors.append(
            f"joint_names {list(v['joint_names'])} are not the model's joints "
            f"{list(model.joint_names)}"
        )
    if model.cameras and len(model.cameras) != len(v["image_topics"]):
        errors.append(
            f"image_topics has {len(v['image_topics'])} topics for the model's "
            f"{len(model.cameras)} cameras {list(model.cameras)}"
        )
    return errors


def validate(values: Mapping[str, Any], model: ModelFacts | None = None) -> list[str]:
    """All reasons why this full set of values is not admissible (empty when it is)."""
    errors = [e for name in SPECS if (e := check_value(name, values.get(name))) is not None]
    if errors:
        return errors
    return _check_consistency(values, model)


def check_update(
    current: Mapping[str, Any],
    changes: Mapping[str, Any],
    model: ModelFacts | None = None,
) -> list[str]:
    """Reasons to reject `changes` applied on top of `current` (the on-set-parameters check)."""
    errors = [e for name, val in changes.items() if (e := check_value(name, val)) is not None]
    if errors:
        return errors
    merged = dict(current)
    merged.update(changes)
    return _check_consistency(merged, model)


def load_param_file(path: str, node: str = "diffusion_controller") -> dict[str, Any]:
    """Every setting from a ROS parameter file (the `/**` section and the node's own, as
    `--ros-args --params-file` would apply them) on top of the defaults; no rclpy needed, so
    benches and tests build the core from the very file a deployment runs.

    Raises ValueError for an unknown key or an inadmissible set of values."""
    values = defaults()
    values.update(read_param_file(path, SPECS, node))
    errors = validate(values)
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return values


def obstacle_tuples(flat: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """Flat x, y, z, r, ... into (x, y, z, r) tuples (length already validated)."""
    vals = [float(x) for x in flat]
    return [tuple(vals[i : i + 4]) for i in range(0, len(vals) - len(vals) % 4, 4)]  # type: ignore[misc]
