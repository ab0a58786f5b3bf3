"""The two-way-round task: reach a target on the table behind an obstacle, passing left or right.

Frame: the robot base frame (panda_link0), which is also the simulator's world frame. x points
forward from the robot, y to the robot's left, z up; the table top is the plane z = 0 and the base
stands on it at the origin. Units are metres and radians.

Geometry (all sampled per seed from a numpy Generator, so a seed always gives the same task):

- Start: the hand points straight down with its tool point (panda_grasptarget, between the closed
  fingertips) low and close to the robot, near (0.30, 0, 0.14); `start_q` is the IK solution.
- Target: a flat green disc on the table centred at x in [0.64, 0.70], y in [-0.04, 0.04].
- Obstacle: a red vertical cylinder standing on the table (radius 3-4 cm, height 24-27 cm) whose
  axis lies on the straight line from the start tool point to the target, 25-28 cm short of the
  target. The straight path is blocked; going over it needs a long climb that brings the forearm
  close to it, so the short solutions pass beside it: left (+y side of the start-to-target line)
  or right. The layout is mirror-symmetric about that line up to the Panda's own small asymmetry, so
  both sides are equally good. Both sides and the reach to the target keep the arm clear of the
  obstacle with the forearm passing above it.

Success: the tool point within `success_radius` (4 cm) of the target centre horizontally and at
most `success_height` (8 cm) above the table, continuously for `dwell` (0.3 s), before `timeout`
(15 s) and without any collision of the arm with the obstacle or the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffusion_controller.control.types import Sphere

TASK_VERSION = 1
NOMINAL_START_TOOL = np.array([0.33, 0.0, 0.13])
# Posture whose tool point is NOMINAL_START_TOOL (hand down): the IK seed for every start.
NOMINAL_START_Q = np.array([0.0, -0.2227, 0.0, -2.9461, 0.0, 2.7235, 0.785])


@dataclass(frozen=True)
class Obstacle:
    """A vertical cylinder standing on the table: axis at (x, y), from z = 0 to z = height."""

    x: float
    y: float
    radius: float
    height: float

    def contains(self, points: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        r = np.hypot(p[:, 0] - self.x, p[:, 1] - self.y)
        return (r <= self.radius) & (p[:, 2] >= 0.0) & (p[:, 2] <= self.height)


@dataclass(frozen=True)
class TaskSpec:
    """One task instance. `start_q` is in panda_joint1..7 order."""

    seed: int
    target: np.ndarray  # [3] centre of the target disc, on the table (z = 0)
    obstacle: Obstacle
    start_q: np.ndarray  # [7]
    start_tool: np.ndarray  # [3] tool point at start_q
    success_radius: float = 0.04
    success_height: float = 0.08
    dwell: float = 0.3
    timeout: float = 15.0
    target_radius: float = 0.04  # drawn size of the disc: the success zone, as the camera sees it
    extra: dict[str, Any] = field(default_factory=dict)

    # --- geometry -------------------------------------------------------------------------------
    def axis(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (forward, left) in the table plane along the start-to-target line."""
        d = self.target[:2] - self.start_tool[:2]
        fwd = d / np.linalg.norm(d)
        return fwd, np.array([-fwd[1], fwd[0]])

    def obstacle_spheres(self, margin: float = 0.0, name: str = "obstacle") -> list[Sphere]:
        """Spheres whose union contains the obstacle grown by `margin` (for keep-out lists).

        Spheres of radius R = sqrt(r^2 + (s/2)^2) centred on the axis every s metres contain every
        slice of the cylinder within s/2 of their centre; with s = r they bulge out by only 12 %.
        """
        r = self.obstacle.radius + margin
        h = self.obstacle.height + margin
        n = max(1, math.ceil(h / r))
        s = h / n
        big = math.sqrt(r * r + 0.25 * s * s)
        return [
            Sphere(
                center=np.array([self.obstacle.x, self.obstacle.y, (i + 0.5) * s]),
                radius=big,
                name=f"{name}_{i}",
            )
            for i in range(n)
        ]

    def side_of(self, ee_path: np.ndarray) -> str:
        """Which way a tool path went round: "left", "right", "over" or "none".

        The path is cut where it first crosses the line through the obstacle's axis perpendicular
        to the start-to-target direction; the signed lateral offset of that crossing decides. A
        crossing within the obstacle's radius (it went above it, or through it) is "over"; a path
        that never crosses is "none".
        """
        p = np.asarray(ee_path, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] < 2 or not np.all(np.isfinite(p[:, :2])):
            return "none"
        fwd, left = self.axis()
        rel = p[:, :2] - np.array([self.obstacle.x, self.obstacle.y])
        along, lateral = rel @ fwd, rel @ left
        before = along < 0.0
        crossing = np.nonzero(before[:-1] & ~before[1:])[0]
        if crossing.size == 0:
            return "none"
        k = int(crossing[0])
        w = -along[k] / (along[k + 1] - along[k]) if along[k + 1] != along[k] else 0.0
        offset = lateral[k] + w * (lateral[k + 1] - lateral[k])
        if abs(offset) <= self.obstacle.radius:
            return "over"
        return "left" if offset > 0 else "right"

    def tool_at_target(self, tool: np.ndarray) -> bool:
        t = np.asarray(tool, dtype=np.float64)
        horizontal = float(np.hypot(t[0] - self.target[0], t[1] - self.target[1]))
        return horizontal <= self.success_radius and t[2] <= self.target[2] + self.success_height

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TASK_VERSION,
            "frame": "panda_link0",
            "seed": int(self.seed),
            "target": [float(v) for v in self.target],
            "obstacle": {
                "shape": "cylinder",
                "x": self.obstacle.x,
                "y": self.obstacle.y,
                "radius": self.obstacle.radius,
                "height": self.obstacle.height,
            },
            "start_q": [float(v) for v in self.start_q],
            "start_tool": [float(v) for v in self.start_tool],
            "success_radius": self.success_radius,
            "success_height": self.success_height,
            "dwell": self.dwell,
            "timeout": self.timeout,
            "target_radius": self.target_radius,
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Inverse of to_dict; raises ValueError on a malformed or unknown-version payload."""
        try:
            if int(d.get("version", TASK_VERSION)) != TASK_VERSION:
                raise ValueError(f"unsupported task version {d.get('version')}")
            ob = d["obstacle"]
            if ob.get("shape", "cylinder") != "cylinder":
                raise ValueError(f"unsupported obstacle shape {ob.get('shape')!r}")
            spec = cls(
                seed=int(d["seed"]),
                target=np.array(d["target"], dtype=np.float64).reshape(3),
                obstacle=Obstacle(
                    float(ob["x"]), float(ob["y"]), float(ob["radius"]), float(ob["height"])
                ),
                start_q=np.array(d["start_q"], dtype=np.float64).reshape(7),
                start_tool=np.array(d["start_tool"], dtype=np.float64).reshape(3),
                success_radius=float(d.get("success_radius", 0.04)),
                success_height=float(d.get("success_height", 0.08)),
                dwell=float(d.get("dwell", 0.3)),
                timeout=float(d.get("timeout", 15.0)),
                target_radius=float(d.get("target_radius", 0.04)),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed task description: {exc!r}") from exc
        values = np.concatenate([spec.target, spec.start_q, spec.start_tool])
        if (
            not np.all(np.isfinite(values))
            or spec.obstacle.radius <= 0
            or spec.obstacle.height <= 0
        ):
            raise ValueError("task description has non-finite or non-positive geometry")
        return spec

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"task description is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ValueError("task description must be a JSON object")
        return cls.from_dict(payload)


def sample_task(seed: int) -> TaskSpec:
    """The task for `seed`: same seed, same task, on any machine."""
    from diffusion_controller.sim.kinematics import panda_kinematics

    rng = np.random.default_rng([int(seed), 0x7A5C])
    kin = panda_kinematics()
    start_goal = NOMINAL_START_TOOL + rng.uniform([-0.01, -0.02, -0.015], [0.01, 0.02, 0.015])
    start_q, err = kin.ik(start_goal, NOMINAL_START_Q, rest=NOMINAL_START_Q)
    if err > 1e-4:  # the sampling ranges are inside the workspace; this guards future edits
        raise RuntimeError(f"start pose IK did not converge for seed {seed} (residual {err:.2e})")
    start_tool = kin.tool_position(start_q)
    # Obstacle first, then the target beyond it on the same line: `ahead` keeps the wrist (which
    # reaches 9 cm in front of the tool point) clear of it at the start, and `gap` keeps the
    # forearm above it when the hand is down at the target.
    ahead = rng.uniform(0.14, 0.155)
    gap = rng.uniform(0.24, 0.26)
    target_y = rng.uniform(-0.04, 0.04)
    dy = target_y - start_tool[1]
    dx = math.sqrt((ahead + gap) ** 2 - dy**2)
    target = np.array([start_tool[0] + dx, target_y, 0.0])
    direction = np.array([dx, dy]) / (ahead + gap)
    centre = start_tool[:2] + ahead * direction
    obstacle = Obstacle(
        x=float(centre[0]),
        y=float(centre[1]),
        radius=float(rng.uniform(0.03, 0.038)),
        height=float(rng.uniform(0.23, 0.26)),
    )
    return TaskSpec(
        seed=int(seed), target=target, obstacle=obstacle, start_q=start_q, start_tool=start_tool
    )


@dataclass
class TaskOutcome:
    success: bool
    collided: bool
    timed_out: bool
    time: float  # seconds from the start until success, collision or timeout (or so far)
    side: str
    collisions: int
    min_clearance: float


class TaskMonitor:
    """Judges one attempt from the tool path, the physics contacts and the clock.

    Call `update` once per control tick with the sim time since the episode start; `done` turns
    true at success (after the dwell), at the first collision, or at the timeout.
    """

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.path: list[np.ndarray] = []
        self.collisions = 0
        self.min_clearance = math.inf
        self.time = 0.0
        self._inside_since: float | None = None
        self.success = False
        self.timed_out = False

    @property
    def collided(self) -> bool:
        return self.collisions > 0

    @property
    def done(self) -> bool:
        return self.success or self.collided or self.timed_out

    def update(
        self, t: float, tool: np.ndarray, new_collisions: int = 0, clearance: float = math.inf
    ) -> bool:
        """Feed one sample; returns `done`. Samples after the verdict are ignored."""
        if self.done:
            return True
        self.time = float(t)
        self.path.append(np.asarray(tool, dtype=np.float64).copy())
        self.collisions += int(new_collisions)
        self.min_clearance = min(self.min_clearance, float(clearance))
        if self.collided:
            return True
        if self.spec.tool_at_target(tool):
            if self._inside_since is None:
                self._inside_since = t
            if t - self._inside_since >= self.spec.dwell - 1e-9:
                self.success = True
        else:
            self._inside_since = None
        if not self.success and t >= self.spec.timeout:
            self.timed_out = True
        return self.done

    def outcome(self) -> TaskOutcome:
        path = np.array(self.path) if self.path else np.zeros((0, 3))
        return TaskOutcome(
            success=self.success,
            collided=self.collided,
            timed_out=self.timed_out,
            time=self.time,
            side=self.spec.side_of(path),
            collisions=self.collisions,
            min_clearance=self.min_clearance,
        )
