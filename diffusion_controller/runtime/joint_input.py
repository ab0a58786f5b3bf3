"""Joint states from a driver, checked and put into the controller's and the model's joint order.

The driver names its joints (sensor_msgs/JointState carries names; other sources do too), the
controller works in its `joint_names` order, and the model in the order it was trained on. This
module holds the one place each of those orders is mapped: `JointStateFilter` matches a message's
names onto the controller's order and refuses anything unsafe to feed the loop (sizes, duplicates,
missing joints, NaN/Inf, stamps out of order or in the future), and `JointOrder` maps the
controller's order onto the model's and back. `InputCounts` keeps what was received and refused,
per input and reason, for diagnostics. ROS-free: the node hands in the message's fields.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class InputRejected(ValueError):
    """An input message that must not reach the core; `kind` names the counter it goes to."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class JointSample:
    """One accepted joint state in the controller's joint order."""

    stamp: float
    positions: np.ndarray  # [J]
    velocities: np.ndarray | None  # [J] or None when the message carried none


@dataclass
class JointStateFilter:
    """Matches /joint_states by name and rejects anything unsafe to feed the loop.

    Extra joints (fingers, other arms) are ignored; NaN or Inf in an ignored joint does not matter.
    `stamp_tolerance` bounds how far in the future a stamp may lie (clock skew between machines).
    """

    joint_names: Sequence[str]
    stamp_tolerance: float = 0.05
    rejected: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    last_reason: str = ""
    _last_stamp: float = -math.inf
    _index_cache: tuple[tuple[str, ...], np.ndarray] | None = None

    def reset(self) -> None:
        self._last_stamp = -math.inf

    def _indices(self, names: Sequence[str]) -> np.ndarray:
        key = tuple(names)
        cache = self._index_cache
        if cache is not None and cache[0] == key:
            return cache[1]
        if len(set(key)) != len(key):
            dup = sorted({n for n in key if key.count(n) > 1})
            raise InputRejected("duplicate", f"joint_states has duplicate joint names {dup}")
        where = {n: i for i, n in enumerate(key)}
        missing = [n for n in self.joint_names if n not in where]
        if missing:
            raise InputRejected("missing", f"joint_states lacks joints {missing}")
        idx = np.array([where[n] for n in self.joint_names], dtype=np.intp)
        self._index_cache = (key, idx)
        return idx

    def check(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        velocities: Sequence[float],
        stamp: float,
        now: float,
    ) -> JointSample:
        """Return the sample in controller order, or raise InputRejected with the reason."""
        try:
            sample = self._check(names, positions, velocities, stamp, now)
        except InputRejected as exc:
            self.rejected[exc.kind] = self.rejected.get(exc.kind, 0) + 1
            self.last_reason = exc.reason
            raise
        self.accepted += 1
        return sample

    def _check(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        velocities: Sequence[float],
        stamp: float,
        now: float,
    ) -> JointSample:
        names = list(names)
        pos = np.asarray(positions, dtype=np.float64).reshape(-1)
        if pos.shape[0] != len(names):
            raise InputRejected(
                "size", f"joint_states has {len(names)} names but {pos.shape[0]} positions"
            )
        vel_all = np.asarray(velocities, dtype=np.float64).reshape(-1)
        if vel_all.shape[0] not in (0, len(names)):
            raise InputRejected(
                "size", f"joint_states has {len(names)} names but {vel_all.shape[0]} velocities"
            )
        idx = self._indices(names)
        q = pos[idx]
        if not np.all(np.isfinite(q)):
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(q))]
            raise InputRejected("nonfinite", f"joint_states position NaN/Inf for {bad}")
        v = None
        if vel_all.shape[0]:
            v = vel_all[idx]
            if not np.all(np.isfinite(v)):
                bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(v))]
                raise InputRejected("nonfinite", f"joint_states velocity NaN/Inf for {bad}")
        if not math.isfinite(stamp) or stamp <= 0.0:
            raise InputRejected("stamp", f"joint_states stamp {stamp} is unset or invalid")
        if stamp > now + self.stamp_tolerance:
            raise InputRejected(
                "future", f"joint_states stamp is {stamp - now:.3f} s in the future"
            )
        if stamp <= self._last_stamp:
            raise InputRejected(
                "order",
                f"joint_states stamp {stamp:.6f} is not after the previous {self._last_stamp:.6f}",
            )
        self._last_stamp = stamp
        return JointSample(stamp, q, v)


@dataclass(frozen=True)
class JointOrder:
    """The controller's joint order against the model's: index arrays for both directions.

    `to_model` picks model-order values out of a controller-order array, `to_controller` the
    reverse; both are built once (at configure), so a tick or an inference only indexes."""

    controller: tuple[str, ...]
    model: tuple[str, ...]
    to_model: np.ndarray = field(repr=False)
    to_controller: np.ndarray = field(repr=False)

    @classmethod
    def between(cls, controller: Sequence[str], model: Sequence[str]) -> JointOrder:
        """ValueError when the two name sets differ (the table's model check says it first)."""
        ctrl, mod = tuple(controller), tuple(model)
        if set(ctrl) != set(mod) or len(ctrl) != len(mod):
            raise ValueError(f"joint_names {list(ctrl)} are not the model's joints {list(mod)}")
        to_model = np.array([ctrl.index(n) for n in mod], dtype=np.intp)
        to_controller = np.array([mod.index(n) for n in ctrl], dtype=np.intp)
        return cls(ctrl, mod, to_model, to_controller)

    def model_from_controller(self, values: np.ndarray) -> np.ndarray:
        """[..., J] in controller order -> model order (the last axis)."""
        return np.asarray(values)[..., self.to_model]

    def controller_from_model(self, values: np.ndarray) -> np.ndarray:
        """[..., J] in model order -> controller order (the last axis)."""
        return np.asarray(values)[..., self.to_controller]


class InputCounts:
    """Inputs received and refused, by input and reason; thread-safe (executor callbacks).

    The node owns one for its whole life, so the counts run on across configure cycles."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = {"joint_states": 0, "images": 0}
        self.rejected: dict[str, int] = {}
        self.last_rejection = ""

    def got(self, what: str) -> None:
        with self._lock:
            self.received[what] = self.received.get(what, 0) + 1

    def refused(self, what: str, kind: str, reason: str) -> None:
        with self._lock:
            key = f"{what}_{kind}"
            self.rejected[key] = self.rejected.get(key, 0) + 1
            self.last_rejection = f"{what}: {reason}"

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], str]:
        """(received, rejected, last rejection), copied under the lock."""
        with self._lock:
            return dict(self.received), dict(self.rejected), self.last_rejection
