"""Sensor and scene perturbations the simulator applies, for robustness evaluation.

A `Perturbation` is a plain value (what to do); `SensorPerturber` applies it to one episode with a
generator of its own, seeded from the task seed, so an episode under a perturbation is as
reproducible as one without. Kept free of ROS and PyBullet so the evaluation can build, record
and test perturbations without either.

- delay: camera frames (and optionally joint states) leave the simulator `image_delay`
  (`joint_state_delay`) seconds after they were taken, stamped with the time they were taken, as a
  slow camera driver or a congested network would deliver them.
- noise: zero-mean Gaussian noise on the published joint positions (`joint_noise`, rad) and on
  every image pixel (`image_noise`, in 0..255 intensity levels, clipped). The physics and the task
  verdict always use the true state.
- dropout: each camera frame is dropped with probability `image_drop_prob`.
- obstacle_shift: `obstacle_shift_time` seconds after the reset the obstacle jumps by
  `obstacle_shift` (dx, dy) metres on the table.
- freeze (`image_freeze` 1): every camera frame of the episode is replaced by the episode's first
  frame, so the policy sees the scene as it was at the start and never the arm moving: what a
  policy does without visual feedback (the "blind" ablation).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from diffusion_controller.settings.sim import (
    MAX_OBSTACLE_SHIFT,
    SIM_SPECS,
    check_freeze,
    check_shift,
)
from diffusion_controller.settings.spec import check

MAX_SHIFT = MAX_OBSTACLE_SHIFT  # metres: beyond this the task is a different task


def _default(name: str) -> Any:
    value = SIM_SPECS[name].default
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Perturbation:
    """What to perturb in one episode; the default perturbs nothing. Every field is the sim_arm
    setting of the same name (settings/sim.py): its default, range and unit are written there."""

    image_delay: float = _default("image_delay")
    joint_state_delay: float = _default("joint_state_delay")
    image_noise: float = _default("image_noise")
    joint_noise: float = _default("joint_noise")
    image_drop_prob: float = _default("image_drop_prob")
    obstacle_shift: tuple[float, float] = _default("obstacle_shift")
    obstacle_shift_time: float = _default("obstacle_shift_time")
    image_freeze: float = _default("image_freeze")  # 1: every frame the episode's first

    def problems(self) -> list[str]:
        """Why these values are not admissible (empty when they are): the table's ranges."""
        out = []
        for f in fields(self):
            if f.name == "obstacle_shift":
                why = check_shift(self.obstacle_shift)
            elif f.name == "image_freeze":
                why = check_freeze(self.image_freeze)
            else:
                value = getattr(self, f.name)
                why = check(SIM_SPECS[f.name], float(value) if isinstance(value, (int, float))
                            and not isinstance(value, bool) else value)
            if why:
                out.append(why)
        return out

    @property
    def shifts_obstacle(self) -> bool:
        return any(float(s) != 0.0 for s in self.obstacle_shift)

    @property
    def active(self) -> bool:
        return self != Perturbation()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["obstacle_shift"] = [float(s) for s in self.obstacle_shift]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Perturbation:
        """Inverse of to_dict; unknown keys or bad values raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown perturbation fields {unknown}")
        values: dict[str, Any] = {}
        try:
            for key, value in d.items():
                if key == "obstacle_shift":
                    values[key] = tuple(float(v) for v in value)
                else:
                    values[key] = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed perturbation: {exc}") from exc
        out = cls(**values)
        problems = out.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return out


class DelayLine:
    """Items released in order once the clock reaches their due time (a fixed-latency link)."""

    def __init__(self) -> None:
        self._items: deque[tuple[float, Any]] = deque()

    def push(self, due: float, item: Any) -> None:
        self._items.append((float(due), item))

    def pop_due(self, now: float) -> list[Any]:
        out = []
        while self._items and self._items[0][0] <= now + 1e-9:
            out.append(self._items.popleft()[1])
        return out

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class SensorPerturber:
    """Applies a Perturbation's sensor effects for one episode (one generator per episode)."""

    def __init__(self, perturbation: Perturbation, seed: int) -> None:
        problems = perturbation.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.p = perturbation
        self.rng = np.random.default_rng([int(seed), 0x5E75])
        self.dropped = 0
        self.frames = 0
        self._first: np.ndarray | None = None  # the episode's first frame, under image_freeze

    def joints(self, q: np.ndarray) -> np.ndarray:
        """Measured joint positions as published: the truth plus noise."""
        q = np.asarray(q, dtype=np.float64)
        if self.p.joint_noise <= 0.0:
            return q
        return q + self.rng.normal(0.0, self.p.joint_noise, size=q.shape)

    def image(self, img: np.ndarray) -> np.ndarray | None:
        """The frame as published, or None when this frame is dropped."""
        self.frames += 1
        if self.p.image_freeze:
            if self._first is None:
                self._first = np.array(img, copy=True)
            img = self._first.copy()
        if self.p.image_drop_prob > 0.0 and self.rng.random() < self.p.image_drop_prob:
            self.dropped += 1
            return None
        if self.p.image_noise <= 0.0:
            return img
        noisy = img.astype(np.float32) + self.rng.normal(
            0.0, self.p.image_noise, size=img.shape
        ).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
