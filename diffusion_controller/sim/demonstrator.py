"""The scripted expert: round the obstacle on a side picked by a fair coin, then down to the target.

The plan is made once per episode, open loop, as a 100 Hz joint position stream:

1. Cartesian waypoints of the tool point with the hand pointing down (task frame: along the
   start-to-target line, and sideways to it): out to the chosen side in front of the obstacle,
   past it on that side at a low passage height, above the target, down to the target.
2. The polyline's corners are rounded with quadratic Bezier blends, and one minimum-jerk time
   law runs along its arc length, so the tool starts and stops at rest and never stops in between.
3. Each 10 ms sample is solved by damped least-squares IK started from the previous sample's
   solution, which keeps the posture on one branch and the joint path smooth.
4. The duration is stretched until joint velocities and accelerations stay below half of the
   Panda's limits, and (when a world is given) the arm's clearance to the obstacle and the table
   along the plan is checked by the simulator's own collision geometry; a plan that comes too close
   is remade wider and higher.

Randomness (side, lateral offset, passage height, speed) comes from the demonstrator's own
generator, seeded separately from the task, so tasks and demonstrations can be varied on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diffusion_controller.sim.kinematics import panda_kinematics
from diffusion_controller.sim.task import TaskSpec

if TYPE_CHECKING:
    from diffusion_controller.sim.world import SimWorld

CONTROL_DT = 0.01  # the 100 Hz command rate
# Franka Panda datasheet acceleration limits (rad/s^2); the URDF carries only velocities.
PANDA_ACCELERATION = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])
HAND_HALF_WIDTH = 0.105  # the hand is 21 cm across its fingers' opening direction (here: sideways)
GOAL_HEIGHT = 0.045  # tool point above the table at the end: fingertips about 4 cm up


@dataclass
class DemoPlan:
    """A timed joint trajectory; `command_at(t)` holds the last sample after the end."""

    side: str  # "left" | "right"
    dt: float
    q: np.ndarray  # [N, 7] joint targets at t = k * dt
    tool: np.ndarray  # [N, 3] planned tool point (FK of q)
    waypoints: np.ndarray  # [M, 3] the tool polyline before blending
    min_clearance: float  # planned arm-obstacle clearance (inf when not checked)
    attempts: int

    @property
    def duration(self) -> float:
        return (len(self.q) - 1) * self.dt

    def command_at(self, t: float) -> np.ndarray:
        k = min(max(round(t / self.dt), 0), len(self.q) - 1)
        return self.q[k].copy()


def _blend_polyline(points: np.ndarray, radius: float, step: float = 0.002) -> np.ndarray:
    """Densely sampled polyline with each interior corner replaced by a quadratic Bezier arc."""
    pts = [points[0]]
    for i in range(1, len(points) - 1):
        a, b, c = points[i - 1], points[i], points[i + 1]
        lin, lout = np.linalg.norm(b - a), np.linalg.norm(c - b)
        rho = min(radius, 0.45 * lin, 0.45 * lout)
        if rho < 1e-6:
            pts.append(b)
            continue
        p0 = b + (a - b) * (rho / lin)
        p2 = b + (c - b) * (rho / lout)
        pts.append(p0)
        # Sample the arc finely (sub-millimetre) so the later linear resampling has no kinks.
        n = max(16, math.ceil(2.0 * rho / (0.2 * step)))
        for s in np.linspace(0.0, 1.0, n)[1:-1]:
            pts.append((1 - s) ** 2 * p0 + 2 * (1 - s) * s * b + s**2 * p2)
        pts.append(p2)
    pts.append(points[-1])
    coarse = np.array(pts)
    # Resample at a fine uniform spacing so arc length is well defined everywhere.
    seg = np.linalg.norm(np.diff(coarse, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    fine = np.linspace(0.0, s[-1], max(2, math.ceil(s[-1] / step) + 1))
    return np.stack([np.interp(fine, s, coarse[:, k]) for k in range(3)], axis=1)


def _min_jerk(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def waypoints_for(
    spec: TaskSpec, side: str, lateral: float, height: float, above: float
) -> np.ndarray:
    """Tool-point polyline for one side. `lateral` is measured from the obstacle's axis."""
    fwd, left = spec.axis()
    sign = 1.0 if side == "left" else -1.0
    c = np.array([spec.obstacle.x, spec.obstacle.y])
    r = spec.obstacle.radius

    def at(xy: np.ndarray, z: float) -> np.ndarray:
        return np.array([xy[0], xy[1], z])

    front = c - (r + 0.06) * fwd + sign * lateral * left
    back = c + (r + 0.07) * fwd + sign * lateral * left
    tgt = spec.target[:2]
    return np.array(
        [
            spec.start_tool,
            at(front, height),
            at(back, height),
            at(tgt, spec.target[2] + above),
            at(tgt, spec.target[2] + GOAL_HEIGHT),
        ]
    )


def _demo_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0xDE30])


def coin_side(seed: int) -> str:
    """The side the demonstrator picks for `seed` when not told (its generator's first draw)."""
    return "left" if _demo_rng(seed).random() < 0.5 else "right"


def plan_demonstration(
    spec: TaskSpec,
    seed: int | None = None,
    side: str | None = None,
    world: SimWorld | None = None,
    min_clearance: float = 0.02,
    max_attempts: int = 4,
) -> DemoPlan:
    """Plan one demonstration for `spec`. `side` forces a side; otherwise a fair coin picks it."""
    rng = _demo_rng(spec.seed if seed is None else seed)
    coin = "left" if rng.random() < 0.5 else "right"
    chosen = coin if side is None else side
    if chosen not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    kin = panda_kinematics()
    lateral = spec.obstacle.radius + HAND_HALF_WIDTH + 0.045 + rng.uniform(0.0, 0.03)
    height = rng.uniform(0.10, 0.14)
    above = rng.uniform(0.10, 0.13)
    speed = rng.uniform(0.12, 0.16)  # mean tool speed along the path, m/s
    blend = rng.uniform(0.04, 0.06)
    best: DemoPlan | None = None
    for attempt in range(1, max_attempts + 1):
        wps = waypoints_for(spec, chosen, lateral, height, above)
        path = _blend_polyline(wps, blend)
        plan = _time_and_solve(kin, spec, path, speed, chosen, wps, attempt)
        if world is not None:
            checks = world.clearance_along(plan.q[::5])
            plan.min_clearance = float(checks[:, 0].min())
            table = float(checks[:, 1].min())
            if plan.min_clearance >= min_clearance and table >= 0.01:
                return plan
        else:
            return plan
        if best is None or plan.min_clearance > best.min_clearance:
            best = plan
        lateral += 0.02
        height += 0.01
    assert best is not None
    return best


def _time_and_solve(
    kin, spec: TaskSpec, path: np.ndarray, speed: float, side: str, wps: np.ndarray, attempt: int
) -> DemoPlan:
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(arc[-1])
    duration = max(1.0, length / speed)
    vmax = np.array(kin.velocity)
    for _ in range(8):
        n = math.ceil(duration / CONTROL_DT) + 1
        s = _min_jerk(np.arange(n) * CONTROL_DT / duration) * length
        tool_goals = np.stack([np.interp(s, arc, path[:, k]) for k in range(3)], axis=1)
        q = np.empty((n, 7))
        prev = spec.start_q.copy()
        for k in range(n):
            prev, _ = kin.ik(tool_goals[k], prev, rest=spec.start_q, min_iters=2, posture_gain=0.02)
            q[k] = prev
        vel = np.abs(np.diff(q, axis=0)) / CONTROL_DT
        acc = np.abs(np.diff(q, 2, axis=0)) / CONTROL_DT**2
        ratio = max(
            float((vel / vmax).max(initial=0.0)),
            math.sqrt(float((acc / PANDA_ACCELERATION).max(initial=0.0))),
        )
        if ratio <= 0.5:
            break
        duration *= max(1.1, ratio / 0.5)
    # The first sample is exactly the start posture, so the command stream starts without a jump.
    q[0] = spec.start_q
    tool = np.array([kin.tool_position(qk) for qk in q])
    return DemoPlan(side, CONTROL_DT, q, tool, wps, math.inf, attempt)
