"""One set of live setting changes applied to a running controller: whole, or not at all.

A change request (what `ros2 param set` or `ros2 param load` sends, or a test) can touch the
safety filter, the watchdogs, the inference worker and the backend at once. Everything is first
checked and prepared from the merged values, with nothing touched: the set against the settings
table and the loaded model (settings/checks.py), the backend's sample limit, the
worker's new settings, a new safety filter (with its own robot model, since pinocchio data is never
shared across threads) that has taken over the commanded state now, the watchdog deadlines. Only
then is the loop's part swapped in by one function the loop thread runs between two ticks
(`ControlLoop.call`); when that succeeded the worker and the backend take theirs, which cannot
fail any more. Any failure before raises ValueError with the reason, and nothing has changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffusion_controller.control import assembly
from diffusion_controller.control.watchdogs import WatchdogConfig
from diffusion_controller.runtime.worker import WorkerSettings
from diffusion_controller.settings import checks
from diffusion_controller.settings.controller import SPECS

# `ctrl` below is a runtime.controller.Controller (typed Any: that module imports this one).
Controller = Any

# Settings the worker takes (each is the WorkerSettings field of the same name).
WORKER_KEYS = frozenset(f.name for f in dataclasses.fields(WorkerSettings))
WATCHDOG_KEYS = frozenset(f.name for f in dataclasses.fields(WatchdogConfig))
# The filter's live settings (its tightened limits and barriers) are fixed per filter: changing any
# of them builds a new filter that takes over the commanded state between two ticks
# (assembly.live_safety_settings: the SafetyConfig fields the table marks live).


@dataclass
class _Prepared:
    """Everything a change needs, built and checked before anything is swapped."""

    values: dict[str, Any]
    robot: Any = None
    safety: Any = None
    watchdog: Any = None
    worker: Any = None
    inference_timeout: float | None = None


def apply(ctrl: Controller, changes: Mapping[str, Any]) -> None:
    """Apply `changes` (setting name -> value) as one change.

    Only settings the table marks live are taken; those the core has no use for (node-side ones
    such as `publish_markers`) are only recorded in `ctrl.values`. Raises ValueError (the
    reason) when the change cannot be taken; then nothing has changed."""
    prepared = _prepare(ctrl, dict(changes))
    _swap_into_loop(ctrl, prepared)
    # From here on nothing can fail: the worker settings were validated when they were built.
    if prepared.safety is not None:
        ctrl.robot = prepared.robot
    if prepared.watchdog is not None:
        ctrl.joint_filter.stamp_tolerance = float(prepared.values["stamp_tolerance"])
    if prepared.worker is not None:
        ctrl.worker.update(**dataclasses.asdict(prepared.worker))
    if prepared.inference_timeout is not None:
        ctrl.backend.timeout = prepared.inference_timeout
    ctrl.values = prepared.values


def _prepare(ctrl: Controller, changes: dict[str, Any]) -> _Prepared:
    keys = set(changes)
    errors = checks.check_update(ctrl.values, changes, ctrl.model_facts)
    fixed = sorted(k for k in keys if k in SPECS and not SPECS[k].live)
    if fixed and not errors:
        errors = [f"{', '.join(fixed)} cannot change while running: build the controller again "
                  "(the node's next configure)"]
    if errors:
        raise ValueError("; ".join(errors))
    if "num_samples" in keys:  # the loaded backend (engine profile) bounds it: say so now
        ctrl.backend.check_num_samples(int(changes["num_samples"]))
    v = dict(ctrl.values)
    v.update(changes)
    out = _Prepared(values=v)
    if keys & WORKER_KEYS:
        out.worker = assembly.worker_settings(v)  # the model's bounds: checked above
    if keys & assembly.live_safety_settings():
        out.robot, out.safety = assembly.safety_filter_from_settings(ctrl.urdf, v)
        try:
            q, qd, qdd = ctrl.loop.safety.state
        except RuntimeError:
            pass  # never reset: the loop resets the new filter when it starts
        else:
            out.safety.take_over(q, qd, qdd)  # refused here, before anything is posted
    if keys & WATCHDOG_KEYS:
        out.watchdog = assembly.watchdog_config(v)
    if "inference_timeout" in keys and hasattr(ctrl.backend, "timeout"):
        out.inference_timeout = float(changes["inference_timeout"])
    return out


def _swap_into_loop(ctrl: Controller, prepared: _Prepared) -> None:
    """The loop's part, run by the loop thread between two ticks (inline when it is stopped)."""
    new_filter, watchdog = prepared.safety, prepared.watchdog
    if new_filter is None and watchdog is None:
        return
    loop = ctrl.loop

    def swap() -> None:
        if new_filter is not None:
            try:
                q_now, v_now, a_now = loop.safety.state
            except RuntimeError:
                pass
            else:
                new_filter.take_over(q_now, v_now, a_now)  # ValueError: nothing swapped
            loop.safety = new_filter
        if watchdog is not None:
            loop.set_watchdog_config(watchdog)

    try:
        loop.call(swap, timeout=1.0)
    except TimeoutError as exc:
        raise ValueError(str(exc)) from exc
