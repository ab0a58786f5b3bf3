"""Core config objects for tests, built from the settings table the way the node builds them.

The core's config classes carry no defaults for settings (diffusion_controller/settings/ holds
them), so a test starts from the table's defaults and names what it changes:
`safety(**kw)`, `scheduler(**kw)`, `watchdogs(**kw)`, `worker(**kw)`. Keywords that are settings
are given in their settings form; the others are the core object's own fields. The safety
filter's scene is the exception: unit tests isolate one constraint family at a time, so
`safety()` starts with no workspace box, no self-collision pairs and no obstacles (the table
plane at z = 0 stays), and takes the scene fields in the core's form (tuples, Sphere lists, None
to switch one off). Importable because pyproject.toml puts test/ on pytest's path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diffusion_controller.control import assembly
from diffusion_controller.settings.controller import SPECS

SCENE = ("workspace_min", "workspace_max", "table_z", "obstacles", "self_collision_pairs")
# The limits the safety filter's unit and property tests were written for (the filter's former own
# defaults, faster than the table's; within its ranges): `safety(**UNIT_LIMITS, ...)`.
UNIT_LIMITS = {"position_margin": 0.03, "velocity_scale": 0.9, "acceleration_scale": 0.8,
               "jerk_scale": 0.8, "sphere_margin": 0.01}
# The watchdog deadlines and the hand-over the loop's unit tests were written for (the core's former
# own defaults): `watchdogs(**UNIT_DEADLINES)`, `scheduler(**UNIT_HANDOVER)`.
UNIT_DEADLINES = {"joint_state_timeout": 0.05, "image_timeout": 0.5, "chunk_timeout": 0.5,
                  "tracking_error_limit": 0.2, "stamp_tolerance": 0.02}
UNIT_HANDOVER = {"blend_time": 0.2}


def _split(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = {k: v for k, v in kw.items() if k in SPECS}
    own = {k: v for k, v in kw.items() if k not in SPECS}
    return settings, own


def values(**changes: Any) -> dict[str, Any]:
    """The table's defaults with `changes` on top."""
    return assembly.default_values(**changes)


def safety(**kw: Any) -> Any:
    """A SafetyConfig: table defaults, no scene but the table plane, `kw` on top."""
    scene: dict[str, Any] = {"workspace_min": None, "workspace_max": None, "obstacles": [],
                             "self_collision_pairs": None}
    scene.update({k: kw.pop(k) for k in SCENE if k in kw})
    settings, tuning = _split(kw)
    return dataclasses.replace(assembly.safety_config(values(**settings), **tuning), **scene)


def scheduler(**kw: Any) -> Any:
    """A SchedulerConfig: table defaults, `kw` on top."""
    settings, own = _split(kw)
    return assembly.scheduler_config(values(**settings), **own)


def watchdogs(**kw: Any) -> Any:
    """A WatchdogConfig: table defaults, `kw` on top (None switches a check off)."""
    off = {k: kw.pop(k) for k in list(kw) if kw[k] is None}
    return dataclasses.replace(assembly.watchdog_config(values(**kw)), **off)


def worker(**kw: Any) -> Any:
    """WorkerSettings: table defaults, `kw` on top."""
    return assembly.worker_settings(values(**kw))
