"""Warm start and committed prefix for the next inference, from the chunk being executed now.

The next chunk is computed from an observation stamped t0 but only reaches the control loop after
the inference latency. Two things follow, both computed here without ROS or torch:

- warm start: the current chunk re-timed onto the new grid t0 + k*dt is a good initial guess, so the
  sampler can start from it partially re-noised and run fewer DDIM steps;
- prefix: the actions of the new grid that the arm will already have executed (from the current
  chunk) by the time the new chunk arrives are not the policy's to change; inpainting them keeps the
  hand-over free of jumps.

Both are returned in absolute joint units; the backend normalises them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusion_controller.control.types import Chunk


@dataclass(frozen=True)
class ChunkPlan:
    """What the planner hands to `PolicyBackend.infer` for one inference started at `t0`."""

    t0: float
    warm_start: np.ndarray | None  # [H, J] absolute, on the grid t0 + k*dt, or None
    prefix: np.ndarray | None  # [k, J] absolute: the first k actions of that grid, or None
    prefix_len: int
    reason: str = ""  # why no warm start / prefix was produced, "" when both are present

    @property
    def has_warm_start(self) -> bool:
        return self.warm_start is not None


def retime(chunk: Chunk, times: np.ndarray) -> np.ndarray:
    """Positions of `chunk` at `times`, linear in time, held at the first/last action outside it.

    Holding at the ends mirrors what the control loop does when a chunk runs out: it keeps the last
    target. Returns float64 [len(times), J].
    """
    pos = np.asarray(chunk.positions, dtype=np.float64)
    grid = chunk.times()
    t = np.asarray(times, dtype=np.float64)
    if pos.shape[0] == 1:
        return np.repeat(pos, t.shape[0], axis=0)
    out = np.empty((t.shape[0], pos.shape[1]), dtype=np.float64)
    for j in range(pos.shape[1]):
        out[:, j] = np.interp(t, grid, pos[:, j])  # np.interp clamps outside [grid[0], grid[-1]]
    return out


class ChunkPlanner:
    """Builds `ChunkPlan`s for a policy with `horizon` H actions spaced `action_dt` apart.

    `prefix_steps` caps the committed prefix (0 disables it); `latency_margin` (seconds) is added to
    the expected latency so that a slightly slow inference still finds its prefix in the past
    (both the settings of those names: the worker passes them).
    """

    def __init__(
        self,
        horizon: int,
        action_dt: float,
        num_joints: int,
        prefix_steps: int,
        latency_margin: float,
    ) -> None:
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not (math.isfinite(action_dt) and action_dt > 0):
            raise ValueError(f"action_dt must be a positive finite number, got {action_dt}")
        if int(num_joints) < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        if int(prefix_steps) < 0 or int(prefix_steps) > int(horizon):
            raise ValueError(f"prefix_steps must be in [0, horizon={horizon}], got {prefix_steps}")
        if not (math.isfinite(latency_margin) and latency_margin >= 0):
            raise ValueError(f"latency_margin must be finite and >= 0, got {latency_margin}")
        self.horizon = int(horizon)
        self.action_dt = float(action_dt)
        self.num_joints = int(num_joints)
        self.prefix_steps = int(prefix_steps)
        self.latency_margin = float(latency_margin)

    def grid(self, t0: float) -> np.ndarray:
        """The new chunk's action times t0 + k*dt, k = 0..H-1."""
        return t0 + self.action_dt * np.arange(self.horizon, dtype=np.float64)

    def prefix_length(self, expected_latency: float) -> int:
        """How many actions of the new grid will have started executing when the chunk arrives.

        The chunk arrives at t0 + latency + margin; grid action k (at t0 + k*dt) is already
        committed when k*dt <= that delay, so k = floor(delay / dt) + 1, capped by `prefix_steps`.
        """
        if not (math.isfinite(expected_latency) and expected_latency >= 0):
            raise ValueError(f"expected_latency must be finite and >= 0, got {expected_latency}")
        if self.prefix_steps == 0:
            return 0
        delay = expected_latency + self.latency_margin
        # The small epsilon keeps an exact multiple of dt (e.g. 0.2 / 0.1) from rounding down.
        k = math.floor(delay / self.action_dt + 1e-9) + 1
        return min(k, self.prefix_steps, self.horizon)

    def plan(self, current: Chunk | None, t0: float, expected_latency: float) -> ChunkPlan:
        """Warm start and prefix for an inference on the observation stamped `t0`.

        No chunk, or one that ended before t0 (the arm is holding, the old plan says nothing about
        the future), gives neither: the policy then samples from pure noise and is free to start.
        """
        if not math.isfinite(t0):
            raise ValueError(f"t0 must be finite, got {t0}")
        k = self.prefix_length(expected_latency)
        if current is None:
            return ChunkPlan(t0, None, None, 0, reason="no previous chunk")
        pos = np.asarray(current.positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[0] < 1 or pos.shape[1] != self.num_joints:
            raise ValueError(
                f"current chunk positions must be [H>=1, {self.num_joints}], got {pos.shape}"
            )
        if not np.all(np.isfinite(pos)):
            raise ValueError("current chunk contains NaN or Inf positions")
        if not (math.isfinite(current.t0) and math.isfinite(current.dt) and current.dt > 0):
            raise ValueError(f"current chunk has invalid timing t0={current.t0} dt={current.dt}")
        if current.t_end < t0:
            return ChunkPlan(t0, None, None, 0, reason="previous chunk ended before t0")
        warm = retime(current, self.grid(t0))
        prefix = warm[:k].copy() if k > 0 else None
        return ChunkPlan(t0, warm, prefix, k)
