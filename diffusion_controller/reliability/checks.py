"""Checks on a recorded stream of published joint commands, for fault drills, fuzzing and soaks.

A receiver records every command (arrival time, positions). These functions say whether each one
stayed inside the effective limits (the URDF's, tightened by the node's safety parameters, exactly
as the safety filter tightens them), and how the arm came to rest after an event: by command
index, one command per node tick, never by arrival time, because a loaded receiver gets commands
late and in bursts. So a test can state "braked at the limit to rest within N commands, then held"
and "no command outside limits" from what actually came out of the node, on any machine; how soon
after an input deadline the brake starts is proven on an injected clock (test/unit). ROS-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffusion_controller.control.types import JointLimits

STILL = 1e-6  # rad per command: closer than this to the previous command is "not moving"


def effective_limits(urdf: str, joint_names: Sequence[str],
                     values: Mapping[str, Any]) -> JointLimits:
    """The limits the safety filter enforces under these settings values (their
    position_margin and velocity/acceleration/jerk scales; control.limits.tighten)."""
    from diffusion_controller.control.limits import tighten
    from diffusion_controller.control.robot_model import RobotModel

    base = RobotModel.from_urdf(urdf, joint_names=list(joint_names)).urdf_limits()
    return tighten(base, float(values["position_margin"]), float(values["velocity_scale"]),
                   float(values["acceleration_scale"]), float(values["jerk_scale"]))


@dataclass(frozen=True)
class Violations:
    """Counts of commands outside each limit, and the worst excess of each (0 when none)."""

    commands: int
    nonfinite: int
    position: int
    velocity: int
    acceleration: int
    worst_position: float
    worst_velocity_ratio: float
    worst_acceleration_ratio: float

    @property
    def total(self) -> int:
        return self.nonfinite + self.position + self.velocity + self.acceleration

    def __str__(self) -> str:
        return (f"{self.commands} commands: {self.nonfinite} non-finite, {self.position} outside "
                f"the position range (worst by {self.worst_position:.2e} rad), {self.velocity} "
                f"too fast (worst {self.worst_velocity_ratio:.4f} x limit), {self.acceleration} "
                f"accelerating too hard (worst {self.worst_acceleration_ratio:.4f} x limit)")


def limit_violations(q: np.ndarray, limits: JointLimits, dt: float, rel_tol: float = 1e-3,
                     abs_tol: float = 1e-9) -> Violations:
    """Check consecutive commands `q` [N, J], published every `dt` s, against `limits`.

    Velocity is the first difference over dt, acceleration the second over dt^2 (the filter
    integrates its state once per tick, so a missed tick does not widen a step). `rel_tol` absorbs
    floating-point rounding in those differences only.
    """
    q = np.asarray(q, dtype=np.float64).reshape(-1, len(limits.names))
    n = q.shape[0]
    finite = np.all(np.isfinite(q), axis=1)
    qf = q[finite]
    below = np.maximum(limits.lower - qf, 0.0)
    above = np.maximum(qf - limits.upper, 0.0)
    excess = np.maximum(below, above)
    pos_bad = int(np.count_nonzero(np.any(excess > abs_tol, axis=1)))
    v_ratio = np.zeros(0)
    a_ratio = np.zeros(0)
    if qf.shape[0] > 1:
        v = np.diff(qf, axis=0) / dt
        v_ratio = np.max(np.abs(v) / limits.velocity, axis=1)
    if qf.shape[0] > 2:
        a = np.diff(qf, n=2, axis=0) / dt**2
        a_ratio = np.max(np.abs(a) / limits.acceleration, axis=1)
    return Violations(
        commands=n,
        nonfinite=int(n - np.count_nonzero(finite)),
        position=pos_bad,
        velocity=int(np.count_nonzero(v_ratio > 1.0 + rel_tol)),
        acceleration=int(np.count_nonzero(a_ratio > 1.0 + rel_tol)),
        worst_position=float(np.max(excess)) if excess.size else 0.0,
        worst_velocity_ratio=float(np.max(v_ratio)) if v_ratio.size else 0.0,
        worst_acceleration_ratio=float(np.max(a_ratio)) if a_ratio.size else 0.0,
    )


@dataclass(frozen=True)
class BrakeRun:
    """Where a stop happened in a command sequence, by command index (one command per tick).

    `onset` is the first command of the braking run: from there on, every moving joint's step
    shrinks strictly at every command (a joint at rest stays at rest, none reverses) until `rest`,
    the first command of a run of unchanged ones."""

    onset: int
    rest: int
    # first command of the run's tail in which every joint decelerates at its limit (or lands
    # on zero, or rests): the filter's brake (control.braking); None when not asked for
    full_rate_onset: int | None = None

    @property
    def commands(self) -> int:
        """Commands from the start of braking to the first at rest."""
        return self.rest - self.onset

    @property
    def gentle(self) -> int:
        """Falling steps before the full-rate tail (0 when not asked for)."""
        return 0 if self.full_rate_onset is None else self.full_rate_onset - self.onset


def rest_index(q: np.ndarray, i_from: int, min_still: int = 5,
               still: float = STILL) -> int | None:
    """Index of the first command at or after `i_from` that begins a run of `min_still` unchanged
    commands (to `still`); None if there is none yet."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[0] <= min_still:
        return None
    still_step = np.max(np.abs(np.diff(q, axis=0)), axis=1) <= still  # command i -> i + 1
    run = np.ones(still_step.size - min_still + 1, dtype=bool)
    for k in range(min_still):
        run &= still_step[k:k + run.size]
    hits = np.flatnonzero(run[max(i_from, 0):])
    return int(hits[0]) + max(i_from, 0) if hits.size else None


def brake_run(q: np.ndarray, i_from: int, min_still: int = 5, still: float = STILL,
              deceleration: np.ndarray | None = None, dt: float | None = None,
              rel_tol: float = 1e-3) -> BrakeRun | None:
    """The stop after command `i_from`, located by behaviour only (no receive times, so it does
    not depend on how the observer was scheduled): the rest command (`rest_index`) and, walking
    back from it, the first command from which all speeds fall monotonically to that rest. The
    walk stops at `i_from`. With `deceleration` (per joint) and `dt`, also where the full-rate
    tail starts: commands integrate q += (v + v') dt / 2, so under the brake each joint's step
    shrinks by exactly deceleration * dt^2 per command, and by at most that while it lands on
    zero. None if the commands never come to rest after `i_from`."""
    q = np.asarray(q, dtype=np.float64)
    rest = rest_index(q, i_from, min_still, still)
    if rest is None:
        return None
    d = np.diff(q[:rest + 2], axis=0)  # d[k] = q[k + 1] - q[k]; d[rest] is still

    def falls(k: int) -> bool:
        """Step d[k + 1] continues a stop after d[k]: each joint's step shrinks strictly without
        reversing, or the joint was already at rest and stays there."""
        before, after = d[k], d[k + 1]
        resting = np.abs(before) <= still
        shrinks = (np.abs(after) < np.abs(before)) & (before * after >= 0.0)
        return bool(np.all(np.where(resting, np.abs(after) <= still, shrinks)))

    onset = rest
    while onset > max(i_from, 0) and falls(onset - 1):
        onset -= 1
    if deceleration is None or dt is None:
        return BrakeRun(onset=onset, rest=rest)
    full = np.asarray(deceleration, dtype=np.float64) * dt * dt
    tol = rel_tol * full + 1e-12

    def brakes(k: int) -> bool:
        """Step d[k + 1] follows d[k] under the brake, on every joint."""
        before, after = np.abs(d[k]), np.abs(d[k + 1])
        drop = before - after
        landed_next = np.abs(d[k + 2]) <= still if k + 2 < d.shape[0] else np.ones_like(drop, bool)
        at_limit = np.abs(drop - full) <= tol
        landing = (drop >= -tol) & (drop <= full + tol) & ((after <= still) | landed_next)
        ok = np.where(before <= still, after <= still, (at_limit | landing)
                      & (d[k] * d[k + 1] >= 0.0))
        return bool(np.all(ok))

    full_onset = rest
    while full_onset > onset and brakes(full_onset - 1):
        full_onset -= 1
    return BrakeRun(onset=onset, rest=rest, full_rate_onset=full_onset)


def describe_violations(q: np.ndarray, limits: JointLimits, dt: float,
                        times: Sequence[float] | None = None, context: int = 3,
                        rel_tol: float = 1e-3, most: int = 5) -> str:
    """Where the velocity steps of `limit_violations` are, for a failure message: per offending
    step its index, size (x the velocity limit), the joints over the limit, and the steps around
    it (rad per command, and their ratio to the offending one's neighbours: a step that is a
    whole multiple of its neighbours on every joint is what a lost command looks like, a step
    that is not is one the node published); receive times when given."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[0] < 2:
        return "no steps"
    d = np.diff(q, axis=0)
    ratio = np.abs(d) / dt / limits.velocity
    bad = np.flatnonzero(np.max(ratio, axis=1) > 1.0 + rel_tol)
    lines = [f"{bad.size} velocity steps over the limit"]
    for k in bad[:most]:
        joints = [limits.names[j] for j in np.flatnonzero(ratio[k] > 1.0 + rel_tol)]
        lo, hi = max(k - context, 0), min(k + context + 1, d.shape[0])
        around = np.concatenate([d[max(k - 2, 0):k], d[k + 1:k + 3]])
        typical = np.median(np.abs(around), axis=0) if around.size else np.zeros(d.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            multiple = np.where(typical > 1e-9, np.abs(d[k]) / typical, np.nan)
        lines.append(f"step {k} -> {k + 1}: {np.max(ratio[k]):.2f} x limit on {joints}; "
                     f"x neighbours per joint {np.array2string(multiple, precision=2)}")
        for i in range(lo, hi):
            t = f" t={times[i + 1]:.4f}" if times is not None else ""
            mark = ">>" if i == k else "  "
            lines.append(f"  {mark} d[{i}]{t} {np.array2string(d[i], precision=5)}")
    return "\n".join(lines)


def braking_commands(limits: JointLimits, dt: float) -> int:
    """Most commands a brake at the deceleration limit takes from any admissible speed to rest:
    the slowest joint's velocity limit over its deceleration limit in ticks, plus one for the
    last step before braking (still at the old speed) and one for the partial tick that lands
    on zero (see control.braking)."""
    ticks = float(np.max(limits.velocity / limits.acceleration)) / dt
    return int(np.ceil(ticks - 1e-9)) + 2
