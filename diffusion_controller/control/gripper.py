"""The gripper's command path: the gripper dims of each chunk -> one bounded command per tick.

ROS-free. `GripperPath` is what a controller core with a gripper model needs (the joints to read,
the model state, the chunk split, the command per tick); ros/gripper_io.py only publishes its
commands. Its `GripperCommander` is fed from three threads:
- the worker submits each chunk's gripper dims (`submit`, [H, G] with the chunk's t0, dt, seq),
- the sensor callback offers the measured gripper dims (`measure`, e.g. the finger width),
- the loop thread asks for the command of each published arm command (`step`), saying whether
  the arm is tracking a chunk this tick and which one.

What `step` returns:
- while the arm tracks chunk `seq`: that chunk's gripper dims interpolated at the command's stamp,
  clamped to [width_min, width_max] (each dim), then rate-limited to `max_speed` (m/s per dim)
  from the previous command: at most max_speed * period per command, `period` being the
  nominal time between two commands (as the arm's filter steps one period per command, a missed
  tick slows the gripper down rather than letting it jump), so the command is continuous
  whatever the chunks do;
- otherwise (holding, braking, a fault, the e-stop, a pause, waiting for a chunk): the last
  command, unchanged. The gripper never opens (nor closes) by itself: it may be holding an object,
  and releasing it because the arm stopped would drop it.
- the first command (after configure or `reset`) starts from the measured dims, clamped into the
  limits; with no measurement yet there is none (None: nothing is published).
- when tracking resumes after a stop (a fault's resync, an e-stop reset, a new chunk after a
  hold), the command restarts from the smaller of the last command and the measurement: where the
  fingers are if they closed further than commanded meanwhile (no jump back), and never wider
  than the last command, which would ease the grip on an object the fingers are blocked by (the
  measured width is then wider than the command by the squeeze).
- while not tracking, a dim whose measurement has opened by more than OPENED_TOL since tracking
  stopped, to wider than its command, was opened from outside (the scene was reset, an operator
  opened the hand): its command becomes the measurement, so the hand never closes again by
  itself when the arm is re-enabled (a pinch, and a policy that sees its fingers close on
  nothing and takes the object for grasped). A held object keeps its squeeze: blocked fingers
  stay where they were when tracking stopped.

Lock-free as the loop is: submitted chunks and measurements are immutable values swapped in by
reference; only the loop thread writes the command state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffusion_controller.control.types import Chunk
from diffusion_controller.settings.checks import gripper_settings_errors as settings_errors

if TYPE_CHECKING:
    from diffusion_controller.data.gripper import GripperConfig

_KEEP_CHUNKS = 8  # the loop's current chunk is always among the newest few submitted
# m: more than a squeezed object's give or a measurement's noise, less than any real opening
OPENED_TOL = 0.005


@dataclass(frozen=True)
class GripperSettings:
    """The gripper settings (settings/controller.py, group `gripper`; checked together by
    settings/checks.gripper_settings_errors)."""

    command_topic: str
    command_type: str
    width_min: float
    width_max: float
    max_speed: float

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> GripperSettings:
        errors = settings_errors(v)
        if errors:
            raise ValueError("; ".join(errors))
        lo, hi = (float(x) for x in v["gripper_width_limits"])
        return cls(str(v["gripper_command_topic"]), str(v["gripper_command_type"]), lo, hi,
                   float(v["gripper_max_speed"]))


@dataclass(frozen=True)
class _GripperChunk:
    t0: float
    dt: float
    dims: np.ndarray  # [H, G]
    seq: int

    def at(self, t: float) -> np.ndarray:
        """Linear interpolation on the chunk's grid, its first/last row outside it."""
        x = (t - self.t0) / self.dt
        h = self.dims.shape[0]
        if x <= 0.0 or h == 1:
            return self.dims[0]
        if x >= h - 1:
            return self.dims[-1]
        k = math.floor(x)
        f = x - k
        return (1.0 - f) * self.dims[k] + f * self.dims[k + 1]


class GripperCommander:
    """See the module docstring. `dim` gripper dims; limits and speed apply to each dim."""

    def __init__(self, dim: int, settings: GripperSettings, period: float) -> None:
        if dim < 1:
            raise ValueError(f"a gripper needs at least one dimension, got {dim}")
        if not (period > 0 and math.isfinite(period)):
            raise ValueError(f"period must be positive, got {period}")
        self.dim = int(dim)
        self.settings = settings
        self.reach = float(settings.max_speed) * float(period)  # the most one command may move
        self._lo = np.full(self.dim, settings.width_min)
        self._hi = np.full(self.dim, settings.width_max)
        self._chunks: tuple[_GripperChunk, ...] = ()
        self._measured: np.ndarray | None = None
        self._commanded: np.ndarray | None = None
        self._tracking = False
        self._stopped_at: np.ndarray | None = None  # the measurement when tracking last stopped
        self.held_ticks = 0  # ticks that held the last command (diagnostics, tests)
        self.limited_ticks = 0  # ticks whose change the speed limit cut

    # ------------------------------------------------------------------ inputs (any thread)
    def submit(self, t0: float, dt: float, dims: Any, seq: int) -> None:
        """A chunk's gripper dims [H, G] (worker thread, before the arm's part reaches the loop)."""
        d = np.array(dims, dtype=np.float64)
        if d.ndim != 2 or d.shape[1] != self.dim or d.shape[0] < 1:
            raise ValueError(f"gripper dims must be [H, {self.dim}], got {d.shape}")
        if not np.all(np.isfinite(d)) or not (dt > 0 and math.isfinite(t0)):
            raise ValueError("gripper chunk contains NaN/Inf or a bad time grid")
        d.flags.writeable = False
        chunk = _GripperChunk(float(t0), float(dt), d, int(seq))
        self._chunks = (*self._chunks[-(_KEEP_CHUNKS - 1):], chunk)

    def measure(self, dims: Any) -> None:
        """The measured gripper dims (sensor thread); non-finite values are ignored."""
        m = np.array(dims, dtype=np.float64).reshape(-1)
        if m.shape == (self.dim,) and np.all(np.isfinite(m)):
            m.flags.writeable = False
            self._measured = m

    def dims_for(self, seq: int) -> np.ndarray | None:
        """The gripper dims [H, G] submitted with chunk `seq` (for the planner's warm start)."""
        for chunk in reversed(self._chunks):
            if chunk.seq == seq:
                return chunk.dims
        return None

    @property
    def commanded(self) -> np.ndarray | None:
        return None if self._commanded is None else self._commanded.copy()

    @property
    def measured(self) -> np.ndarray | None:
        return self._measured

    # ------------------------------------------------------------------ loop thread
    def reset(self) -> None:
        """Forget the command: the next one starts from the measurement (activate, clock jump)."""
        self._commanded = None
        self._tracking = False

    def step(self, stamp: float, tracking: bool, seq: int | None) -> np.ndarray | None:
        """The gripper command for the arm command stamped `stamp` (None: nothing to send yet)."""
        measured = self._measured
        if self._commanded is None:
            if measured is None:
                return None
            self._commanded = np.clip(measured, self._lo, self._hi)
            self._tracking = False
            self._stopped_at = measured
        chunk = None
        if tracking and seq is not None:
            chunk = next((c for c in reversed(self._chunks) if c.seq == seq), None)
        if chunk is None:
            if self._tracking or self._stopped_at is None:
                self._stopped_at = measured
            self._tracking = False
            self._follow_outside_opening(measured)
            self.held_ticks += 1
            return self._commanded.copy()
        if not self._tracking and measured is not None:  # resuming: see the module docstring
            self._commanded = np.clip(np.minimum(self._commanded, measured), self._lo, self._hi)
        self._tracking = True
        target = np.clip(chunk.at(stamp), self._lo, self._hi)
        reach = self.reach
        change = np.clip(target - self._commanded, -reach, reach)
        if np.any(np.abs(change) < np.abs(target - self._commanded) - 1e-12):
            self.limited_ticks += 1
        self._commanded = np.clip(self._commanded + change, self._lo, self._hi)
        return self._commanded.copy()


    def _follow_outside_opening(self, measured: np.ndarray | None) -> None:
        """Not tracking: dims opened from outside take their measurement (module docstring)."""
        ref = self._stopped_at
        if measured is None or ref is None or self._commanded is None:
            return
        opened = (measured > ref + OPENED_TOL) & (measured > self._commanded + OPENED_TOL)
        if np.any(opened):
            self._commanded = np.where(opened, np.clip(measured, self._lo, self._hi),
                                       self._commanded)
            self._stopped_at = np.where(opened, measured, ref)


class GripperPath:
    """A gripper model's state and commands around a controller core: `arm` arm joints come
    first in every model vector, the gripper's dims (`gripper`, data/gripper.py) after them."""

    def __init__(self, gripper: GripperConfig, arm: int, settings: GripperSettings,
                 period: float) -> None:
        self.gripper = gripper
        self.arm = int(arm)
        self.settings = settings
        self.commander = GripperCommander(gripper.dim, settings, period)

    @property
    def joints(self) -> list[str]:
        """The gripper joints the joint-state filter must find after the arm's."""
        return list(self.gripper.joints)

    def joint_sample(self, positions: np.ndarray, velocities: np.ndarray | None,
                     to_model: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """A filtered joint state [arm (controller order)..., gripper joints...] -> the arm's
        positions and velocities for the loop, and the model's state [arm (model order)...,
        gripper dims...] for the observation buffer; records the measured gripper dims."""
        q_arm = positions[:self.arm]
        dims = self.gripper.to_dims(positions[self.arm:])
        self.commander.measure(dims)
        v_arm = None if velocities is None else velocities[:self.arm]
        return q_arm, v_arm, np.concatenate([q_arm[to_model], dims])

    def split(self, chunk: Chunk) -> Chunk:
        """Worker thread: keep the chunk's gripper dims; return the chunk with only the arm's."""
        positions = np.asarray(chunk.positions)
        self.commander.submit(chunk.t0, chunk.dt, positions[:, self.arm:], chunk.seq)
        return Chunk(chunk.t0, chunk.dt, positions[:, :self.arm], chunk.seq)

    def join(self, arm_chunk: Chunk) -> Chunk:
        """The current chunk in model layout again (arm in model order + its gripper dims)."""
        dims = self.commander.dims_for(arm_chunk.seq)
        if dims is None:  # not ours (never expected): the command in force, held
            held = self.commander.commanded
            if held is None:
                held = np.zeros(self.gripper.dim)
            dims = np.repeat(held[None], arm_chunk.horizon, axis=0)
        return Chunk(arm_chunk.t0, arm_chunk.dt,
                     np.concatenate([np.asarray(arm_chunk.positions), dims], axis=1),
                     arm_chunk.seq)

    def command(self, stamp: float, tracking: bool, seq: int | None) -> np.ndarray | None:
        """Loop thread, with each published arm command: the gripper joints' position commands
        (e.g. [w/2, w/2]), or None while there is nothing to send yet."""
        dims = self.commander.step(stamp, tracking, seq)
        return None if dims is None else self.gripper.to_joint_positions(dims)
