"""The pick-and-place task: pick up a cube lying anywhere in a 24 x 24 cm patch, drop it in a bin.

Frame: the robot base frame (panda_link0), as for the reach task (sim/task.py): x forward, y to the
robot's left, z up, the table top is z = 0. Units are metres and radians.

Geometry (sampled per seed from the task's own numpy Generator):

- Start: the hand points straight down, fingers open, its tool point (panda_grasptarget) near
  (0.40, 0, 0.25), above the near edge of the cube's patch; `start_q` is the IK solution.
- Cube: a red 4.5 cm cube (100 g), sides aligned with the base axes (the fingers close along y),
  resting on the table with its centre uniformly in x [0.44, 0.68] x y [-0.12, 0.12].
- Bins: two yellow open boxes (walls only, the table is the floor) centred at (0.56, +-0.32), inner
  side 14 cm, walls 5 cm high and 1 cm thick. Left (+y) and right are mirror images about the x
  axis, so both are equally good; the point midway between them (y = 0) is inside the cube's patch,
  so the average of a left and a right demonstration drops the cube back on the table.

Success: the cube at rest (speed < 5 cm/s) inside a bin (its centre within the walls, below their
top), touching neither finger, continuously for `dwell` (0.3 s), before `timeout` (20 s), with no
collision of the arm with the table or a bin (contacts with the cube are the point of the task).
Failure labels, in the order they are decided: `collision` (at once), `dropped` (the cube left the
fingers while they were still commanded closed, and came to rest outside a bin), `wrong_place`
(released on purpose, at rest outside a bin), `missed_grasp` (at the timeout, the cube was never
lifted), `timeout` (anything else at the timeout, e.g. still held).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from diffusion_controller.sim.world import SimWorld

PICK_PLACE_VERSION = 1
TASK_NAME = "pick_place"
NOMINAL_START_TOOL = np.array([0.40, 0.0, 0.25])
FINGER_OPEN = 0.04  # each finger's travel on the Panda hand (width 8 cm)
CUBE_SIZE = 0.045
CUBE_MASS = 0.1
CUBE_X = (0.44, 0.68)
CUBE_Y = (-0.12, 0.12)
BIN_X = 0.56
BIN_Y = 0.32
BIN_INNER_HALF = 0.07
BIN_WALL_HEIGHT = 0.05
BIN_WALL_THICKNESS = 0.01
REST_SPEED = 0.05  # m/s: the cube counts as at rest below this
LIFTED = 0.03  # m above its resting height: the cube has been lifted


@dataclass(frozen=True)
class Bin:
    """An open box on the table: walls around the square |x - cx|, |y - cy| <= inner_half."""

    name: str
    x: float
    y: float
    inner_half: float = BIN_INNER_HALF
    wall_height: float = BIN_WALL_HEIGHT
    wall_thickness: float = BIN_WALL_THICKNESS

    def contains(self, point: np.ndarray) -> bool:
        """A point (the cube's centre) inside the walls and below their top."""
        p = np.asarray(point, dtype=np.float64)
        return (
            abs(p[0] - self.x) <= self.inner_half
            and abs(p[1] - self.y) <= self.inner_half
            and p[2] <= self.wall_height
        )

    def over(self, point: np.ndarray) -> bool:
        """A point horizontally inside the walls, at any height."""
        p = np.asarray(point, dtype=np.float64)
        return abs(p[0] - self.x) <= self.inner_half and abs(p[1] - self.y) <= self.inner_half


def default_bins() -> tuple[Bin, Bin]:
    return (Bin("left", BIN_X, BIN_Y), Bin("right", BIN_X, -BIN_Y))


@dataclass(frozen=True)
class PickPlaceSpec:
    """One pick-and-place instance. `start_q` is in panda_joint1..7 order."""

    seed: int
    cube: np.ndarray  # [3] the cube's centre at rest on the table
    start_q: np.ndarray  # [7]
    start_tool: np.ndarray  # [3]
    cube_size: float = CUBE_SIZE
    cube_mass: float = CUBE_MASS
    bins: tuple[Bin, ...] = field(default_factory=default_bins)
    start_fingers: float = FINGER_OPEN
    dwell: float = 0.3
    timeout: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)

    task = TASK_NAME  # class attribute: which task a spec belongs to

    def bin_named(self, name: str) -> Bin:
        for b in self.bins:
            if b.name == name:
                return b
        raise ValueError(f"no bin {name!r}; bins are {[b.name for b in self.bins]}")

    def bin_containing(self, point: np.ndarray) -> str | None:
        for b in self.bins:
            if b.contains(point):
                return b.name
        return None

    def tool_at_target(self, tool: np.ndarray) -> bool:
        """The tool point horizontally over a bin (where a release would land)."""
        return any(b.over(tool) for b in self.bins)

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "task": TASK_NAME,
            "version": PICK_PLACE_VERSION,
            "frame": "panda_link0",
            "seed": int(self.seed),
            "cube": [float(v) for v in self.cube],
            "cube_size": self.cube_size,
            "cube_mass": self.cube_mass,
            "bins": [
                {
                    "name": b.name,
                    "x": b.x,
                    "y": b.y,
                    "inner_half": b.inner_half,
                    "wall_height": b.wall_height,
                    "wall_thickness": b.wall_thickness,
                }
                for b in self.bins
            ],
            "start_q": [float(v) for v in self.start_q],
            "start_tool": [float(v) for v in self.start_tool],
            "start_fingers": self.start_fingers,
            "dwell": self.dwell,
            "timeout": self.timeout,
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PickPlaceSpec:
        """Inverse of to_dict; raises ValueError on a malformed or unknown-version payload."""
        try:
            if d.get("task") != TASK_NAME:
                raise ValueError(f"not a {TASK_NAME} task: {d.get('task')!r}")
            if int(d.get("version", PICK_PLACE_VERSION)) != PICK_PLACE_VERSION:
                raise ValueError(f"unsupported {TASK_NAME} version {d.get('version')}")
            spec = cls(
                seed=int(d["seed"]),
                cube=np.array(d["cube"], dtype=np.float64).reshape(3),
                start_q=np.array(d["start_q"], dtype=np.float64).reshape(7),
                start_tool=np.array(d["start_tool"], dtype=np.float64).reshape(3),
                cube_size=float(d.get("cube_size", CUBE_SIZE)),
                cube_mass=float(d.get("cube_mass", CUBE_MASS)),
                bins=tuple(
                    Bin(
                        str(b["name"]),
                        float(b["x"]),
                        float(b["y"]),
                        float(b.get("inner_half", BIN_INNER_HALF)),
                        float(b.get("wall_height", BIN_WALL_HEIGHT)),
                        float(b.get("wall_thickness", BIN_WALL_THICKNESS)),
                    )
                    for b in d.get("bins", [])
                )
                or default_bins(),
                start_fingers=float(d.get("start_fingers", FINGER_OPEN)),
                dwell=float(d.get("dwell", 0.3)),
                timeout=float(d.get("timeout", 20.0)),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed {TASK_NAME} description: {exc!r}") from exc
        values = np.concatenate([spec.cube, spec.start_q, spec.start_tool])
        if not np.all(np.isfinite(values)) or spec.cube_size <= 0 or spec.cube_mass <= 0:
            raise ValueError(f"{TASK_NAME} description has non-finite or non-positive geometry")
        return spec


def sample_pick_place(seed: int) -> PickPlaceSpec:
    """The pick-and-place task for `seed`: same seed, same task, on any machine."""
    from diffusion_controller.sim.kinematics import panda_kinematics
    from diffusion_controller.sim.task import NOMINAL_START_Q

    rng = np.random.default_rng([int(seed), 0x91C4])
    kin = panda_kinematics()
    goal = NOMINAL_START_TOOL + rng.uniform([-0.01, -0.02, -0.01], [0.01, 0.02, 0.01])
    start_q, err = kin.ik(goal, NOMINAL_START_Q, rest=NOMINAL_START_Q)
    if err > 1e-4:  # the sampling ranges are inside the workspace; this guards future edits
        raise RuntimeError(f"start pose IK did not converge for seed {seed} (residual {err:.2e})")
    cube = np.array([rng.uniform(*CUBE_X), rng.uniform(*CUBE_Y), CUBE_SIZE / 2])
    return PickPlaceSpec(
        seed=int(seed), cube=cube, start_q=start_q, start_tool=kin.tool_position(start_q)
    )


def mean_cube() -> np.ndarray:
    """The cube's mean position over seeds (the centre of its patch): what a blind policy knows."""
    return np.array([sum(CUBE_X) / 2, sum(CUBE_Y) / 2, CUBE_SIZE / 2])


@dataclass
class PickPlaceOutcome:
    success: bool
    collided: bool
    timed_out: bool
    time: float  # seconds from the start until the verdict (or so far)
    side: str  # the bin the cube rests in ("left" | "right"), else "none"
    collisions: int
    min_clearance: float
    label: str  # "success" | "collision" | "dropped" | "wrong_place" | "missed_grasp" | "timeout"
    lifted: bool
    cube: list[float]  # where the cube is at the verdict


class PickPlaceMonitor:
    """Judges one attempt from the cube, the fingers, the physics contacts and the clock.

    The signature of `update` matches the reach task's TaskMonitor so that callers can feed either;
    this one reads the cube and finger contacts from the world it was given.
    """

    def __init__(self, spec: PickPlaceSpec, world: SimWorld) -> None:
        self.spec = spec
        self.world = world
        self.path: list[np.ndarray] = []
        self.collisions = 0
        self.min_clearance = math.inf
        self.time = 0.0
        self.success = False
        self.timed_out = False
        self.label = ""
        self.lifted = False
        self._released_open: bool | None = None  # at the last release: were fingers commanded open
        self._held = False
        self._resting_since: float | None = None
        self._rest_z = float(spec.cube[2])
        self._cube = np.asarray(spec.cube, dtype=np.float64).copy()

    @property
    def collided(self) -> bool:
        return self.collisions > 0

    @property
    def done(self) -> bool:
        return bool(self.label)

    def update(
        self, t: float, tool: np.ndarray, new_collisions: int = 0, clearance: float = math.inf
    ) -> bool:
        """Feed one sample (after a physics step); returns `done`. Later samples are ignored."""
        if self.done:
            return True
        self.time = float(t)
        self.path.append(np.asarray(tool, dtype=np.float64).copy())
        self.collisions += int(new_collisions)
        self.min_clearance = min(self.min_clearance, float(clearance))
        if self.collided:
            self.label = "collision"
            return True
        w = self.world
        pos, vel = w.cube_state()
        self._cube = pos
        touching = w.fingers_touching_cube()
        held = touching == 2 and pos[2] > self._rest_z + 0.005
        if pos[2] > self._rest_z + LIFTED:
            self.lifted = True
        if self._held and touching == 0:  # it just left the hand: on purpose or not
            self._released_open = bool(np.min(w.finger_command()) > self.spec.cube_size / 2)
        self._held = held or (self._held and touching > 0)
        resting = float(np.linalg.norm(vel)) < REST_SPEED and touching == 0
        if pos[2] < -0.05:  # off the table
            self.label = "dropped" if self._released_open is False else "wrong_place"
            return True
        if resting:
            if self._resting_since is None:
                self._resting_since = t
        else:
            self._resting_since = None
        since = self._resting_since
        settled = since is not None and t - since >= self.spec.dwell - 1e-9
        if settled and self.lifted:
            if self.spec.bin_containing(pos) is not None:
                self.label = "success"
                self.success = True
            elif self._released_open is not None:
                self.label = "wrong_place" if self._released_open else "dropped"
            return self.done
        if t >= self.spec.timeout:
            self.timed_out = True
            self.label = "timeout" if self.lifted else "missed_grasp"
        return self.done

    def outcome(self) -> PickPlaceOutcome:
        side = self.spec.bin_containing(self._cube) or "none"
        return PickPlaceOutcome(
            success=self.success,
            collided=self.collided,
            timed_out=self.timed_out,
            time=self.time,
            side=side,
            collisions=self.collisions,
            min_clearance=self.min_clearance,
            label=self.label,
            lifted=self.lifted,
            cube=[float(v) for v in self._cube],
        )
