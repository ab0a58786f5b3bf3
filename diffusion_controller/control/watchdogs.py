"""Input freshness and sanity checks that decide, every tick, whether the arm may keep moving.

Pure functions of their inputs (stamps, flags, commanded and measured positions), so the loop can
call them every 10 ms and tests can drive every fault directly. When all is well the same
preallocated OK status is returned, so a healthy tick allocates nothing here; reason strings are
only formatted for faults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.spec import check_fields


@dataclass(frozen=True)
class WatchdogConfig:
    """Deadlines (seconds) and limits: the controller settings of the same names, whose defaults,
    ranges and meaning are written in diffusion_controller/settings/controller.py and checked
    against it (control.assembly.watchdog_config(values) builds one). None switches a check off
    (only the core does that: a policy without a camera needs no image deadline). Here:
    `tracking_error_limit` is the largest |commanded - measured| joint position (rad) before the
    arm is not following; stamps up to `stamp_tolerance` ahead of the loop's clock are
    tolerated, beyond they are faults."""

    joint_state_timeout: float
    image_timeout: float | None
    chunk_timeout: float | None
    tracking_error_limit: float | None
    stamp_tolerance: float

    def __post_init__(self) -> None:
        for name in ("joint_state_timeout", "stamp_tolerance"):
            if getattr(self, name) is None:
                raise ValueError(f"WatchdogConfig.{name} cannot be switched off")
        check_fields(self, SPECS)


@dataclass(frozen=True)
class WatchdogStatus:
    """ok, plus a human-readable reason and a stable code per fault."""

    ok: bool
    reasons: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


OK = WatchdogStatus(True)


class Watchdogs:
    """Evaluates the configured checks; holds only the configuration and the joint names."""

    def __init__(
        self, config: WatchdogConfig, joint_names: Sequence[str] | None = None
    ) -> None:
        self.config = config
        self.joint_names = list(joint_names) if joint_names is not None else None

    def evaluate(
        self,
        now: float,
        joint_stamp: float | None,
        image_stamp: float | None,
        last_chunk_time: float | None,
        estop: bool = False,
        paused: bool = False,
        commanded_q: np.ndarray | None = None,
        measured_q: np.ndarray | None = None,
        expect_chunk: bool = True,
    ) -> WatchdogStatus:
        """Check every input against `now` (the stamp clock); faults are listed in a fixed order.

        `expect_chunk=False` skips the chunk deadline (e.g. while holding before the first chunk,
        when its absence is not a fault of the inference side).
        """
        cfg = self.config
        reasons: list[str] = []
        codes: list[str] = []

        def fault(code: str, reason: str) -> None:
            codes.append(code)
            reasons.append(reason)

        if estop:
            fault("estop", "e-stop latched")
        if paused:
            fault("paused", "paused")
        if not math.isfinite(now):
            fault("clock", f"invalid clock reading ({now})")
            return WatchdogStatus(False, tuple(reasons), tuple(codes))
        self._age(now, joint_stamp, cfg.joint_state_timeout, "joint_states", fault)
        if cfg.image_timeout is not None:
            self._age(now, image_stamp, cfg.image_timeout, "image", fault)
        if cfg.chunk_timeout is not None and expect_chunk:
            self._age(now, last_chunk_time, cfg.chunk_timeout, "chunk", fault)
        if measured_q is not None and not np.all(np.isfinite(measured_q)):
            fault("measured_nonfinite", "non-finite measured joint position")
        elif (limit := cfg.tracking_error_limit) is not None and commanded_q is not None \
                and measured_q is not None:
            err = np.abs(np.asarray(commanded_q) - np.asarray(measured_q))
            if err.shape and float(np.max(err)) > limit:
                j = int(np.argmax(err))
                name = self.joint_names[j] if self.joint_names else f"joint [{j}]"
                fault(
                    "tracking_error",
                    f"tracking error {err[j]:.3f} rad on {name} (limit {limit:g} rad)",
                )
        if not codes:
            return OK
        return WatchdogStatus(False, tuple(reasons), tuple(codes))

    def _age(self, now: float, stamp: float | None, timeout: float, what: str, fault) -> None:
        if stamp is None:
            fault(f"{what}_missing", f"no {what} received")
            return
        if not math.isfinite(stamp):
            fault(f"{what}_invalid", f"invalid {what} stamp ({stamp})")
            return
        age = now - stamp
        if age > timeout:
            if what == "chunk":
                text = f"no fresh chunk for {age:.2f} s (deadline {timeout:g} s)"
            else:
                text = f"stale {what} ({age:.2f} s old, limit {timeout:g} s)"
            fault(f"{what}_stale", text)
        elif -age > self.config.stamp_tolerance:
            fault(f"{what}_future", f"{what} stamp {-age:.3f} s in the future")
