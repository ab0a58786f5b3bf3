"""The control core built from settings: one path for the node, the benches and the tests.

`values` is a mapping of setting name -> value, keyed exactly as the settings table names them
(diffusion_controller/settings/controller.py; `default_values()` gives a complete one). The
core's config objects (SafetyConfig, SchedulerConfig, WatchdogConfig, and runtime's
WorkerSettings, built by runtime.worker.worker_settings since control/ never imports runtime/)
carry the settings' names and no defaults of their own for them; the functions here fill every
such field from `values` by name (settings.spec.build), so whatever the node runs, `bench safety
--params FILE` measures, since both build the robot model and the safety filter through
`safety_filter_from_settings`.

Collision geometry is given as strings so that it fits ROS parameter types (settings/geometry.py,
re-exported here):
    collision_spheres:     ["panda_link0: -0.074 -0.002 0.015 0.099", ...]  (link: x y z r, m)
    self_collision_pairs:  ["panda_hand:panda_link0", ...]                   (link:link)
    tool_links:            ["panda_leftfinger", "panda_rightfinger"]         (the tool's links)
    grasp_objects:         [x, y, z, r, ...] flat, like obstacles           (body-only keep-outs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffusion_controller.control.types import Sphere
from diffusion_controller.settings.controller import SPECS, defaults
from diffusion_controller.settings.geometry import (  # noqa: F401 (re-exported)
    SphereTable,
    format_spheres,
    parse_pairs,
    parse_spheres,
)
from diffusion_controller.settings.spec import build


def obstacles(flat: Sequence[float], prefix: str = "obstacle") -> list[Sphere]:
    """Flat x, y, z, r, ... (length a multiple of 4, checked by the table) -> spheres named
    prefix0, prefix1, ... (grasp objects use prefix "grasp")."""
    vals = [float(x) for x in flat]
    return [Sphere(center=np.array(vals[i:i + 3]), radius=vals[i + 3], name=f"{prefix}{i // 4}")
            for i in range(0, len(vals) - len(vals) % 4, 4)]


def robot_from_settings(urdf: str, values: Mapping[str, Any]) -> Any:
    """The pinocchio model of the controlled joints with the configured collision spheres.

    Raises ValueError with what to set when the URDF lacks a link the spheres or pairs name
    (another arm than the Panda/FR3 with its hand needs its own `collision_spheres` and
    `self_collision_pairs`)."""
    import pinocchio as pin

    from diffusion_controller.control.robot_model import RobotModel
    from diffusion_controller.control.urdf_reduction import read_urdf

    spheres = parse_spheres(values["collision_spheres"])
    pairs = parse_pairs(values["self_collision_pairs"])
    xml = read_urdf(urdf)
    try:
        links = {f.name for f in pin.buildModelFromXML(xml).frames}
    except Exception as exc:  # pinocchio raises a bare RuntimeError/ValueError
        raise ValueError(f"pinocchio could not parse the URDF: {exc}") from exc
    missing = sorted(set(spheres) - links)
    if missing:
        raise ValueError(
            f"collision_spheres names links {missing} that the URDF does not have: set "
            "collision_spheres ('link: x y z r' per sphere, link frames of this URDF) and "
            "self_collision_pairs for this robot")
    unpaired = sorted({g for p in pairs for g in p} - set(spheres))
    if unpaired:
        raise ValueError(
            f"self_collision_pairs names links {unpaired} that carry no collision sphere: add "
            "spheres for them to collision_spheres or drop those pairs")
    toolless = sorted(set(values["tool_links"]) - set(spheres))
    if toolless:
        raise ValueError(f"tool_links names links {toolless} that carry no collision sphere: "
                         "set tool_links to this robot's finger links (or [] for no tool)")
    return RobotModel.from_urdf(xml, joint_names=list(values["joint_names"]), spheres=spheres,
                                ee_frame=str(values["ee_frame"]) or None)


def safety_config(values: Mapping[str, Any], **tuning: Any) -> Any:
    """The SafetyConfig the settings describe; `tuning` sets the filter's own fields (tests)."""
    from diffusion_controller.control.safety_filter import SafetyConfig

    convert = {
        "workspace_min": lambda x: tuple(float(v) for v in x),
        "workspace_max": lambda x: tuple(float(v) for v in x),
        "obstacles": obstacles,
        "self_collision_pairs": parse_pairs,
        "tool_links": lambda x: [str(v) for v in x],
        "grasp_objects": lambda x: obstacles(x, prefix="grasp"),
    }
    return build(SafetyConfig, values, SPECS, convert, **tuning)


def safety_filter_from_settings(urdf: str, values: Mapping[str, Any]) -> tuple[Any, Any]:
    """(robot model, safety filter) exactly as the node deploys them; ValueError says why not."""
    from diffusion_controller.control.safety_filter import SafetyFilter

    robot = robot_from_settings(urdf, values)
    return robot, SafetyFilter(robot, safety_config(values))


def scheduler_config(values: Mapping[str, Any], limits: Any = None, **own: Any) -> Any:
    """The chunk scheduler's config; its jerk and stop limits are the filter's own (`limits`),
    `own` sets the scheduler's other fields (tests)."""
    from diffusion_controller.control.chunk_scheduler import SchedulerConfig

    if limits is not None:
        own.setdefault("jerk_limit", [float(x) for x in limits.jerk])
        own.setdefault("stop_acceleration", [float(x) for x in limits.acceleration])
    return build(SchedulerConfig, values, SPECS, **own)


def watchdog_config(values: Mapping[str, Any]) -> Any:
    """The loop's watchdog deadlines."""
    from diffusion_controller.control.watchdogs import WatchdogConfig

    return build(WatchdogConfig, values, SPECS)


def live_safety_settings() -> frozenset[str]:
    """The safety filter's settings that the table lets change while running (a change builds
    a new filter from the merged values)."""
    from diffusion_controller.control.safety_filter import SafetyConfig

    return frozenset(f.name for f in dataclasses.fields(SafetyConfig)
                     if f.name in SPECS and SPECS[f.name].live)


def default_values(**changes: Any) -> dict[str, Any]:
    """The table's defaults with `changes` on top: a complete values mapping for benches and
    tests that build the core without a parameter file. An unknown name is a TypeError, so a
    typo never silently leaves a default in force."""
    values = defaults()
    unknown = sorted(set(changes) - set(values))
    if unknown:
        raise TypeError(f"unknown settings {unknown}")
    values.update(changes)
    return values
