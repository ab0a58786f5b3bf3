"""A gripper as policy dimensions: which joint states it is made of, and how they map to actions.

A model with a gripper has state and action vectors `[arm joints..., gripper dims...]`: the arm's
joint positions in `joint_names` order, then `GripperConfig.dim` gripper dimensions. Two mappings:

- `width` (parallel-jaw hands such as the Franka Panda/FR3 hand): one dimension, the opening in
  metres, the sum of the finger joint positions (each Panda finger travels 0..0.04 m, so the width
  is 0..0.08 m). A width command is sent as `width / len(joints)` for every finger, the symmetric
  split that a mimic-coupled hand produces.
- `joints`: one dimension per gripper joint, each its own position (hands whose joints move
  independently).

The dimension names (`dim_names`) are the column names that episodes and model cards use:
`gripper/width` for the width mapping, the joint names themselves for `joints`.

Plain Python and numpy, no torch and no ROS: the policy config, the data readers, the recorder and
the node's gripper command path all share this one definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAPPINGS = ("width", "joints")
PANDA_FINGERS = ("panda_finger_joint1", "panda_finger_joint2")
WIDTH_DIM = "gripper/width"


@dataclass
class GripperConfig:
    """The gripper's joints (as named in joint states) and how they become policy dimensions."""

    joints: list[str] = field(default_factory=lambda: list(PANDA_FINGERS))
    mapping: str = "width"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "gripper") -> GripperConfig:
        joints = self.joints
        if isinstance(joints, (str, bytes)) or not isinstance(joints, Sequence) or not joints:
            raise ValueError(f"{where}.joints: expected a non-empty list of names, got {joints!r}")
        joints = list(joints)
        for name in joints:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}.joints: every name must be a non-empty string")
        dup = sorted({n for n in joints if joints.count(n) > 1})
        if dup:
            raise ValueError(f"{where}.joints: duplicate names {dup}")
        if self.mapping not in MAPPINGS:
            raise ValueError(
                f"{where}.mapping: must be one of {list(MAPPINGS)}, got {self.mapping!r}"
            )
        if self.mapping == "joints" and WIDTH_DIM in joints:
            raise ValueError(f"{where}.joints: {WIDTH_DIM!r} is reserved")
        self.joints = joints
        return self

    @property
    def dim(self) -> int:
        """How many state/action dimensions the gripper adds."""
        return 1 if self.mapping == "width" else len(self.joints)

    @property
    def dim_names(self) -> list[str]:
        return [WIDTH_DIM] if self.mapping == "width" else list(self.joints)

    def to_dims(self, positions: Any) -> np.ndarray:
        """Gripper joint positions [..., F] (in `joints` order) -> gripper dims [..., dim]."""
        q = np.asarray(positions, dtype=np.float64)
        if q.ndim == 0 or q.shape[-1] != len(self.joints):
            raise ValueError(
                f"gripper positions need a last dimension of {len(self.joints)}, got {q.shape}"
            )
        return q.sum(axis=-1, keepdims=True) if self.mapping == "width" else q.copy()

    def to_joint_positions(self, dims: Any) -> np.ndarray:
        """Gripper dims [..., dim] -> joint position commands [..., F] (width split evenly)."""
        d = np.asarray(dims, dtype=np.float64)
        if d.ndim == 0 or d.shape[-1] != self.dim:
            raise ValueError(f"gripper dims need a last dimension of {self.dim}, got {d.shape}")
        if self.mapping == "width":
            return np.repeat(d / len(self.joints), len(self.joints), axis=-1)
        return d.copy()

    def to_dict(self) -> dict[str, Any]:
        return {"joints": list(self.joints), "mapping": self.mapping}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "gripper") -> GripperConfig:
        """From a mapping (an empty one, or None, is the Panda hand with the width mapping)."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"joints", "mapping"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} (known: ['joints', 'mapping'])")
        cfg = cls.__new__(cls)
        cfg.joints = data.get("joints", list(PANDA_FINGERS))
        cfg.mapping = data.get("mapping", "width")
        return cfg.validate(where)
