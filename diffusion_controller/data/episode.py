"""One demonstration on a uniform time grid: the unit that recording produces and training consumes.

Recordings (rosbag2) arrive with sensors at their own rates; readers resample them onto the grid of
the policy's action period so that training never has to reason about stamps again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Episode:
    """Aligned observations and actions at `stamps` (seconds, uniform spacing `dt`).

    `joints[k]` is the measured joint position at `stamps[k]`, `actions[k]` the joint position
    command in force at `stamps[k]`, and `images[cam][k]` the newest RGB frame at or before
    `stamps[k]`. Columns follow `joint_names`: the arm's joints, then, for a recording with a
    gripper, the gripper's dims (data/gripper.py, e.g. `gripper/width` in m, whose action is the
    gripper command); `meta["gripper"]` then holds the GripperConfig as a dict.
    """

    joint_names: list[str]
    stamps: np.ndarray  # [T] float64 seconds
    joints: np.ndarray  # [T, J] float32
    actions: np.ndarray  # [T, J] float32
    images: dict[str, np.ndarray]  # camera name -> [T, H, W, 3] uint8 RGB
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stamps = np.asarray(self.stamps, dtype=np.float64)
        self.joints = np.asarray(self.joints, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.validate()

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    @property
    def dt(self) -> float:
        return float(np.median(np.diff(self.stamps))) if len(self) > 1 else 0.0

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistency (shapes, dtypes, non-finite values)."""
        t, j = len(self), len(self.joint_names)
        if self.stamps.ndim != 1:
            raise ValueError(f"stamps must be 1-D, got shape {self.stamps.shape}")
        if t > 1 and not np.all(np.diff(self.stamps) > 0):
            raise ValueError("stamps must be strictly increasing")
        for name, arr in (("joints", self.joints), ("actions", self.actions)):
            if arr.shape != (t, j):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(t, j)}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or Inf")
        for cam, img in self.images.items():
            if img.dtype != np.uint8 or img.ndim != 4 or img.shape[0] != t or img.shape[3] != 3:
                raise ValueError(
                    f"images[{cam!r}] must be uint8 [T={t}, H, W, 3], got {img.dtype} {img.shape}"
                )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save as one compressed .npz (images included) for fast re-reading by training."""
        arrays = {f"image_{cam}": img for cam, img in self.images.items()}
        np.savez_compressed(
            path,
            stamps=self.stamps,
            joints=self.joints,
            actions=self.actions,
            header=np.frombuffer(
                json.dumps({"joint_names": self.joint_names, "meta": self.meta}).encode(), np.uint8
            ),
            **arrays,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Episode:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            images = {k[len("image_") :]: data[k] for k in data.files if k.startswith("image_")}
            return cls(
                joint_names=list(header["joint_names"]),
                stamps=data["stamps"],
                joints=data["joints"],
                actions=data["actions"],
                images=images,
                meta=dict(header.get("meta", {})),
            )
