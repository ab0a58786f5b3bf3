"""The task registry: `--task NAME` (record, eval, demo) and the sim node's `task` parameter.

Each task names its sampler (seed -> spec), its JSON reader, its monitor (judges an attempt from the
world) and its scripted demonstrator. Specs say which task they belong to: a pick_place spec has
`task == "pick_place"` and its JSON carries `"task": "pick_place"`; the reach task's JSON predates
the registry and carries no `task` key, so a payload without one is the reach task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_TASK = "panda_reach"


@dataclass(frozen=True)
class Task:
    name: str
    sample: Callable[[int], Any]  # seed -> spec
    from_dict: Callable[[dict[str, Any]], Any]
    monitor: Callable[[Any, Any], Any]  # (spec, SimWorld) -> monitor with update/outcome/done
    plan: Callable[..., Any]  # (spec, side=None, world=None) -> plan with command_at/duration/side
    sides: tuple[str, str]  # the two equally good modes

    def has_gripper(self) -> bool:
        return self.name == "pick_place"


def _reach() -> Task:
    from diffusion_controller.sim.demonstrator import plan_demonstration
    from diffusion_controller.sim.task import TaskMonitor, TaskSpec, sample_task

    def plan(spec: Any, side: str | None = None, world: Any = None) -> Any:
        return plan_demonstration(spec, side=side, world=world)

    return Task(
        DEFAULT_TASK, sample_task, TaskSpec.from_dict, lambda s, _w: TaskMonitor(s), plan,
        ("left", "right"),
    )  # fmt: skip


def _pick_place() -> Task:
    from diffusion_controller.sim.pick_demonstrator import plan_pick_place
    from diffusion_controller.sim.pick_place import (
        PickPlaceMonitor,
        PickPlaceSpec,
        sample_pick_place,
    )

    def plan(spec: Any, side: str | None = None, world: Any = None) -> Any:
        return plan_pick_place(spec, side=side)

    return Task(
        "pick_place", sample_pick_place, PickPlaceSpec.from_dict, PickPlaceMonitor, plan,
        ("left", "right"),
    )  # fmt: skip


_FACTORIES: dict[str, Callable[[], Task]] = {DEFAULT_TASK: _reach, "pick_place": _pick_place}
TASK_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_task(name: str) -> Task:
    """The task called `name`; raises ValueError naming the known ones otherwise."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown task {name!r}; known: {list(TASK_NAMES)}")
    return _FACTORIES[name]()


def task_of(spec: Any) -> Task:
    return get_task(str(getattr(spec, "task", DEFAULT_TASK)))


def spec_from_dict(d: dict[str, Any]) -> Any:
    return get_task(str(d.get("task", DEFAULT_TASK))).from_dict(d)


def spec_from_json(text: str) -> Any:
    """Any task's spec from its JSON; raises ValueError on malformed text or an unknown task."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"task description is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("task description must be a JSON object")
    return spec_from_dict(payload)
