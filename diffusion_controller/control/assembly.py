"""The control core built from settings: one path for the node, the benches and the tests.

`values` is a mapping of setting name -> value, keyed exactly as the parameter table names them
(diffusion_controller/ros/params.py; `params.defaults()` gives a complete one). Nothing here
carries a default of its own: whatever the node runs, `bench safety --params FILE` measures, since
both build the robot model and the safety filter through `safety_filter_from_settings`.

Collision geometry is given as strings so that it fits ROS parameter types:
    collision_spheres:     ["panda_link0: -0.074 -0.002 0.015 0.099", ...]  (link: x y z r, m)
    self_collision_pairs:  ["panda_hand:panda_link0", ...]                   (link:link)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffusion_controller.control.types import Sphere

SphereTable = dict[str, list[tuple[float, float, float, float]]]


def parse_spheres(entries: Sequence[str]) -> SphereTable:
    """'link: x y z r' strings -> {link: [(x, y, z, r), ...]}; ValueError names the bad entry."""
    out: SphereTable = {}
    for entry in entries:
        link, sep, rest = str(entry).partition(":")
        try:
            nums = [float(x) for x in rest.replace(",", " ").split()]
        except ValueError:
            nums = []
        if not sep or not link.strip() or len(nums) != 4 or not np.all(np.isfinite(nums)) \
                or nums[3] <= 0:
            raise ValueError(f"collision_spheres entry {entry!r}: expected 'link: x y z r' with "
                             "finite numbers and r > 0")
        out.setdefault(link.strip(), []).append((nums[0], nums[1], nums[2], nums[3]))
    return out


def format_spheres(spheres: Mapping[str, Sequence[Sequence[float]]]) -> list[str]:
    """The inverse of parse_spheres (how the defaults are written into the parameter table)."""
    return [f"{link}: " + " ".join(f"{float(x):g}" for x in s)
            for link, items in spheres.items() for s in items]


def parse_pairs(entries: Sequence[str]) -> list[tuple[str, str]]:
    """'link_a:link_b' strings -> [(link_a, link_b)]; ValueError names the bad entry."""
    pairs = []
    for entry in entries:
        a, sep, b = str(entry).partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise ValueError(f"self_collision_pairs entry {entry!r}: expected 'link_a:link_b'")
        pairs.append((a.strip(), b.strip()))
    return pairs


def obstacles(flat: Sequence[float]) -> list[Sphere]:
    """Flat x, y, z, r, ... (length a multiple of 4, checked by the table) -> spheres."""
    vals = [float(x) for x in flat]
    return [Sphere(center=np.array(vals[i:i + 3]), radius=vals[i + 3], name=f"obstacle{i // 4}")
            for i in range(0, len(vals) - len(vals) % 4, 4)]


def robot_from_settings(urdf: str, values: Mapping[str, Any]) -> Any:
    """The pinocchio model of the controlled joints with the configured collision spheres.

    Raises ValueError with what to set when the URDF lacks a link the spheres or pairs name
    (another arm than the Panda/FR3 with its hand needs its own `collision_spheres` and
    `self_collision_pairs`)."""
    import pinocchio as pin

    from diffusion_controller.control.robot_model import RobotModel, _read_urdf

    spheres = parse_spheres(values["collision_spheres"])
    pairs = parse_pairs(values["self_collision_pairs"])
    xml = _read_urdf(urdf)
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
    return RobotModel.from_urdf(xml, joint_names=list(values["joint_names"]), spheres=spheres,
                                ee_frame=str(values["ee_frame"]) or None)


def safety_config(values: Mapping[str, Any]) -> Any:
    """The SafetyConfig the settings describe."""
    from diffusion_controller.control.safety_filter import SafetyConfig

    return SafetyConfig(
        rate_hz=float(values["control_rate_hz"]),
        mode=str(values["safety_mode"]),
        horizon=int(values["mpc_horizon"]),
        mpc_inputs=int(values["mpc_inputs"]),
        position_margin=float(values["position_margin"]),
        velocity_scale=float(values["velocity_scale"]),
        acceleration_scale=float(values["acceleration_scale"]),
        jerk_scale=float(values["jerk_scale"]),
        workspace_min=tuple(float(x) for x in values["workspace_min"]),
        workspace_max=tuple(float(x) for x in values["workspace_max"]),
        table_z=float(values["table_z"]),
        obstacles=obstacles(values["obstacles"]),
        sphere_margin=float(values["sphere_margin"]),
        self_collision_pairs=parse_pairs(values["self_collision_pairs"]),
    )


def safety_filter_from_settings(urdf: str, values: Mapping[str, Any]) -> tuple[Any, Any]:
    """(robot model, safety filter) exactly as the node deploys them; ValueError says why not."""
    from diffusion_controller.control.safety_filter import SafetyFilter

    robot = robot_from_settings(urdf, values)
    return robot, SafetyFilter(robot, safety_config(values))


def scheduler_config(values: Mapping[str, Any], limits: Any) -> Any:
    """The chunk scheduler's config; its jerk and stop limits are the filter's own."""
    from diffusion_controller.control.chunk_scheduler import SchedulerConfig

    return SchedulerConfig(
        latency_margin=float(values["latency_margin"]),
        blend_window=float(values["blend_time"]),
        max_chunk_age=float(values["chunk_timeout"]),
        future_tolerance=float(values["stamp_tolerance"]),
        jerk_limit=[float(x) for x in limits.jerk],
        stop_acceleration=[float(x) for x in limits.acceleration],
    )


def watchdog_config(values: Mapping[str, Any]) -> Any:
    """The loop's watchdog deadlines."""
    from diffusion_controller.control.watchdogs import WatchdogConfig

    return WatchdogConfig(
        joint_state_timeout=float(values["joint_state_timeout"]),
        image_timeout=float(values["image_timeout"]),
        chunk_timeout=float(values["chunk_timeout"]),
        tracking_error=float(values["tracking_error_limit"]),
        future_tolerance=float(values["stamp_tolerance"]),
    )


def worker_settings(values: Mapping[str, Any]) -> Any:
    """The inference worker's settings (each field is the setting of the same name)."""
    from diffusion_controller.runtime.worker import WorkerSettings

    return WorkerSettings(
        inference_rate_hz=float(values["inference_rate_hz"]),
        ddim_steps=int(values["ddim_steps"]),
        eta=float(values["eta"]),
        warm_start=bool(values["warm_start"]),
        warm_start_strength=float(values["warm_start_strength"]),
        prefix_steps=int(values["prefix_steps"]),
        latency_margin=float(values["latency_margin"]),
        num_samples=int(values["num_samples"]),
        seed=int(values["seed"]),
        image_timeout=float(values["image_timeout"]),
        uncertainty_threshold=float(values["uncertainty_threshold"]),
        uncertainty_action=str(values["uncertainty_action"]),
        uncertainty_scale=float(values["uncertainty_scale"]),
        inference_frame_wait=float(values["inference_frame_wait"]),
    )
