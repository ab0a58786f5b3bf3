"""The scripted pick_place expert: grasp the cube, carry it to the bin a fair coin picks, drop it.

The plan is made once per episode, open loop, as a 100 Hz stream of arm joint targets and finger
targets (the gripper command), from the cube position it is given:

1. above the cube (hand down, fingers open), 2. down to grasp height, 3. close the fingers at the
hand's speed and hold a moment (the finger motors stop on the cube and squeeze it with their
bounded force), 4. lift, 5. carry to a point above the chosen bin, 6. open, 7. rise a little.

Each move is a straight tool-point line with a minimum-jerk time law (at rest at both ends), solved
every 10 ms by damped least-squares IK from the previous solution (one posture branch, smooth joint
path), and stretched until joint velocities and accelerations stay under half the Panda's limits.

Randomness (bin, heights, speed, drop point) comes from the demonstrator's own generator, seeded
apart from the task. Given the mean cube position instead of the true one (`cube=mean_cube()`) it
is the blind baseline: the same motions, aimed where the cube is on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusion_controller.sim.demonstrator import CONTROL_DT, PANDA_ACCELERATION, _min_jerk
from diffusion_controller.sim.kinematics import panda_kinematics
from diffusion_controller.sim.pick_place import FINGER_OPEN, PickPlaceSpec

FINGER_SPEED = 0.05  # m/s per finger, as the simulated (and the Franka) hand moves
GRASP_DEPTH = 0.002  # tool point this far above the cube's centre at the grasp


@dataclass
class PickPlacePlan:
    """Timed arm and finger targets; `command_at`, `gripper_at` hold the last sample at the end."""

    side: str  # the bin: "left" | "right"
    dt: float
    q: np.ndarray  # [N, 7] arm joint targets at t = k * dt
    fingers: np.ndarray  # [N, 2] finger targets (m, each finger's opening)
    tool: np.ndarray  # [N, 3] planned tool point (FK of q)
    waypoints: np.ndarray  # [M, 3] the tool points the moves join
    min_clearance: float = math.inf  # not checked: the moves stay above the bins' walls
    attempts: int = 1

    @property
    def duration(self) -> float:
        return (len(self.q) - 1) * self.dt

    def _index(self, t: float) -> int:
        return min(max(round(t / self.dt), 0), len(self.q) - 1)

    def command_at(self, t: float) -> np.ndarray:
        return self.q[self._index(t)].copy()

    def gripper_at(self, t: float) -> np.ndarray:
        return self.fingers[self._index(t)].copy()


def _up(dz: float) -> np.ndarray:
    return np.array([0.0, 0.0, dz])


def _pick_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0xB1A5])


def coin_bin(seed: int) -> str:
    """The bin the demonstrator picks for `seed` when not told (its generator's first draw)."""
    return "left" if _pick_rng(seed).random() < 0.5 else "right"


class _Builder:
    """Appends moves and gripper actions to a growing joint/finger stream."""

    def __init__(self, spec: PickPlaceSpec, speed: float) -> None:
        self.kin = panda_kinematics()
        self.spec = spec
        self.speed = speed
        self.q = [spec.start_q.copy()]
        self.f = [np.full(2, spec.start_fingers)]
        self.tool = spec.start_tool.copy()
        self.waypoints = [self.tool.copy()]

    def move(self, goal: np.ndarray, min_time: float = 0.6) -> None:
        goal = np.asarray(goal, dtype=np.float64)
        start, q0, f = self.tool.copy(), self.q[-1].copy(), self.f[-1].copy()
        duration = max(min_time, float(np.linalg.norm(goal - start)) / self.speed)
        vmax = np.array(self.kin.velocity)
        for _ in range(8):
            n = math.ceil(duration / CONTROL_DT)
            s = _min_jerk(np.arange(1, n + 1) * CONTROL_DT / duration)
            qs, prev = np.empty((n, 7)), q0
            for k in range(n):
                goal_k = start + (goal - start) * s[k]
                prev, _ = self.kin.ik(
                    goal_k, prev, rest=self.spec.start_q, min_iters=2, posture_gain=0.02
                )
                qs[k] = prev
            path = np.vstack([q0, qs])
            vel = np.abs(np.diff(path, axis=0)) / CONTROL_DT
            acc = np.abs(np.diff(np.vstack([self.q[-2] if len(self.q) > 1 else q0, path]), 2,
                                 axis=0)) / CONTROL_DT**2  # fmt: skip
            ratio = max(
                float((vel / vmax).max(initial=0.0)),
                math.sqrt(float((acc / PANDA_ACCELERATION).max(initial=0.0))),
            )
            if ratio <= 0.5:
                break
            duration *= max(1.1, ratio / 0.5)
        self.q.extend(qs)
        self.f.extend([f] * len(qs))
        self.tool = goal
        self.waypoints.append(goal.copy())

    def grip(self, target: float, hold: float) -> None:
        """Ramp both finger targets to `target` at the hand's speed, then wait `hold` s."""
        f0 = float(self.f[-1][0])
        n_ramp = max(1, math.ceil(abs(target - f0) / FINGER_SPEED / CONTROL_DT))
        n_hold = math.ceil(hold / CONTROL_DT)
        q = self.q[-1]
        for k in range(1, n_ramp + n_hold + 1):
            frac = min(1.0, k / n_ramp)
            self.q.append(q.copy())
            self.f.append(np.full(2, f0 + (target - f0) * frac))

    def wait(self, seconds: float) -> None:
        for _ in range(math.ceil(seconds / CONTROL_DT)):
            self.q.append(self.q[-1].copy())
            self.f.append(self.f[-1].copy())


def plan_pick_place(
    spec: PickPlaceSpec,
    seed: int | None = None,
    side: str | None = None,
    cube: np.ndarray | None = None,
) -> PickPlacePlan:
    """Plan one demonstration. `side` forces the bin; `cube` replaces the true cube position."""
    rng = _pick_rng(spec.seed if seed is None else seed)
    coin = "left" if rng.random() < 0.5 else "right"
    chosen = coin if side is None else side
    bin_ = spec.bin_named(chosen)
    aim = np.asarray(spec.cube if cube is None else cube, dtype=np.float64)
    above = rng.uniform(0.09, 0.12)
    lift = rng.uniform(0.15, 0.19)
    release = rng.uniform(0.11, 0.14)
    speed = rng.uniform(0.16, 0.22)  # m/s, mean tool speed of a move
    drop = rng.uniform(-0.025, 0.025, size=2)  # within the bin, away from its walls
    b = _Builder(spec, speed)
    b.move(aim + _up(above))
    b.move(aim + _up(GRASP_DEPTH), min_time=0.8)
    b.grip(0.0, hold=0.25)
    b.move(aim + _up(lift), min_time=0.8)
    b.move(np.array([bin_.x + drop[0], bin_.y + drop[1], release]))
    b.grip(FINGER_OPEN, hold=0.1)
    b.move(b.tool + _up(0.05), min_time=0.5)
    b.wait(0.2)
    q = np.array(b.q)
    tool = np.array([b.kin.tool_position(qk) for qk in q])
    return PickPlacePlan(chosen, CONTROL_DT, q, np.array(b.f), tool, np.array(b.waypoints))
