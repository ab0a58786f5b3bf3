"""Run a joint command source against SimWorld at the 100 Hz control rate and judge the result.

Used by the recorder and the tests: it is the in-process, faster-than-real-time equivalent of the
sim node plus a controller, with no DDS in between. A tick is: command, advance 10 ms of physics,
then read the state the command produced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from diffusion_controller.sim.tasks import task_of
from diffusion_controller.sim.world import SimWorld

CONTROL_DT = 0.01

# (sim time after the tick, the command sent during it, the world) -> None
TickHook = Callable[[float, np.ndarray, SimWorld], None]


def rollout(
    world: SimWorld,
    spec: Any,
    command_at: Callable[[float], np.ndarray],
    *,
    gripper_at: Callable[[float], np.ndarray] | None = None,
    tail: float = 0.3,
    min_time: float = 0.0,
    max_time: float | None = None,
    on_tick: TickHook | None = None,
    on_start: Callable[[SimWorld], None] | None = None,
) -> Any:
    """Reset `world` to `spec`, then command `command_at(t)` every 10 ms until the task is decided.

    `gripper_at(t)`, when given, is the finger command sent with each arm command. `spec` is any
    registered task's (sim/tasks.py); the outcome is that task's.

    Keeps running `tail` seconds after a success, and at least until `min_time` (the end of a
    planned motion), so recordings show the arm settled at the target; stops at once on a
    collision, and at `max_time` (default: the task's timeout).
    """
    world.reset(spec)
    monitor = task_of(spec).monitor(spec, world)
    if on_start is not None:
        on_start(world)
    limit = spec.timeout if max_time is None else max_time
    t = 0.0
    done_at: float | None = None
    while True:
        cmd = np.asarray(command_at(t), dtype=np.float64)
        world.command(cmd)
        if gripper_at is not None:
            world.command_gripper(gripper_at(t))
        contacts = world.step(CONTROL_DT)
        t = world.time
        monitor.update(t, world.tool_position(), contacts.new_events, world.min_clearance())
        if on_tick is not None:
            on_tick(t, cmd, world)
        if monitor.done and done_at is None:
            done_at = t
        if done_at is not None and (
            not monitor.success or (t - done_at >= tail - 1e-9 and t >= min_time - 1e-9)
        ):
            break
        if t >= limit - 1e-9:
            break
    return monitor.outcome()
