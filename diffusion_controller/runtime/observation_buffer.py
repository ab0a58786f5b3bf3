"""Recent joint states and camera frames, assembled into the policy's observation on demand.

Sensors arrive at their own rates (joint states ~100 Hz+, cameras 15-30 Hz) on executor threads;
the inference thread asks for an observation a few times a second. The observation is To frames
spaced `dt` apart ending at the newest image of the first camera, each camera contributing its
newest frame at or before those times, and the joint positions interpolated at the chosen image
stamps: the same alignment the recorded episodes use (newest image at or before a grid time, joints
at that time). ROS-free and thread-safe; no call blocks for longer than a copy of a few arrays.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence

import numpy as np

from diffusion_controller.runtime.backend import Observation


class ObservationBuffer:
    """Ring buffers of (stamp, joint positions) and, per camera, (stamp, RGB image at model size).

    `max_joint_gap` bounds how far an image stamp may lie outside the joint history (seconds): a
    camera frame newer than the newest joint state by more than that yields no observation rather
    than one with a stale arm state.
    """

    def __init__(
        self,
        joint_names: Sequence[str],
        cameras: Sequence[str],
        image_size: Sequence[int],
        joint_capacity: int = 512,
        image_capacity: int = 32,
        max_joint_gap: float = 0.05,
    ) -> None:
        if not joint_names:
            raise ValueError("ObservationBuffer needs at least one joint")
        if not cameras:
            raise ValueError("ObservationBuffer needs at least one camera")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera names must be unique: {list(cameras)}")
        if joint_capacity < 2 or image_capacity < 1:
            raise ValueError("joint_capacity must be >= 2 and image_capacity >= 1")
        self.joint_names = list(joint_names)
        self.cameras = list(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_joint_gap = float(max_joint_gap)
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)  # a frame of the first camera arrived
        j = len(self.joint_names)
        self._jcap = int(joint_capacity)
        self._jstamps = np.full(self._jcap, -np.inf)
        self._jpos = np.zeros((self._jcap, j))
        self._jcount = 0  # total ever written; index of the next write = count % cap
        self._images: dict[str, deque[tuple[float, np.ndarray]]] = {
            c: deque(maxlen=int(image_capacity)) for c in self.cameras
        }
        self.rejected = 0
        self.last_reason = ""

    # --- writers (executor threads) --------------------------------------------------------

    def add_joints(self, stamp: float, positions: np.ndarray) -> str | None:
        """Store one joint state (controller order); returns the reason if it was rejected."""
        q = np.asarray(positions, dtype=np.float64).reshape(-1)
        reason = None
        if q.shape[0] != len(self.joint_names):
            reason = f"joint state has {q.shape[0]} values for {len(self.joint_names)} joints"
        elif not np.all(np.isfinite(q)) or not math.isfinite(stamp):
            reason = "joint state contains NaN or Inf"
        with self._lock:
            if reason is None and self._jcount and stamp <= self._jstamps[
                (self._jcount - 1) % self._jcap
            ]:
                reason = f"joint state stamp {stamp:.6f} is not after the newest stored one"
            if reason is not None:
                self.rejected += 1
                self.last_reason = reason
                return reason
            i = self._jcount % self._jcap
            self._jstamps[i] = stamp
            self._jpos[i] = q
            self._jcount += 1
        return None

    def add_image(self, camera: str, stamp: float, image: np.ndarray) -> str | None:
        """Store one RGB frame at model size (not copied: the caller hands it over)."""
        img = np.asarray(image)
        reason = None
        if camera not in self._images:
            reason = f"unknown camera {camera!r} (known: {self.cameras})"
        elif img.dtype != np.uint8 or img.shape != (*self.image_size, 3):
            reason = (
                f"image for {camera!r} must be uint8 {(*self.image_size, 3)}, "
                f"got {img.dtype} {img.shape}"
            )
        elif not math.isfinite(stamp):
            reason = f"image stamp {stamp} is not finite"
        with self._lock:
            if reason is None:
                frames = self._images[camera]
                if frames and stamp <= frames[-1][0]:
                    reason = f"image stamp {stamp:.6f} for {camera!r} is not after the newest"
            if reason is not None:
                self.rejected += 1
                self.last_reason = reason
                return reason
            self._images[camera].append((float(stamp), img))
            if camera == self.cameras[0]:
                self._new_frame.notify_all()
        return None

    def wait_for_frame(self, after: float | None, timeout: float) -> bool:
        """Block up to `timeout` s until the first camera has a frame stamped after `after`
        (None: any frame); True if it has. Lets inference start as a frame lands instead of
        using one that is already most of a camera period old."""
        if timeout <= 0:
            return False
        cam = self.cameras[0]

        def fresh() -> bool:
            frames = self._images[cam]
            return bool(frames) and (after is None or frames[-1][0] > after)

        with self._new_frame:
            return self._new_frame.wait_for(fresh, timeout)

    def clear(self) -> None:
        with self._lock:
            self._jcount = 0
            self._jstamps.fill(-np.inf)
            for frames in self._images.values():
                frames.clear()

    # --- readers -----------------------------------------------------------------------------

    def newest_joint_stamp(self) -> float | None:
        with self._lock:
            if not self._jcount:
                return None
            return float(self._jstamps[(self._jcount - 1) % self._jcap])

    def newest_image_stamp(self, camera: str | None = None) -> float | None:
        """Newest stamp of `camera` (default: the oldest "newest" across cameras)."""
        with self._lock:
            cams = [camera] if camera is not None else self.cameras
            stamps = [self._images[c][-1][0] for c in cams if self._images[c]]
            if len(stamps) < len(cams):
                return None
            return min(stamps)

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since the newest joint state and the newest frame of each camera (inf: none)."""
        out: dict[str, float] = {}
        js = self.newest_joint_stamp()
        out["joint_states"] = math.inf if js is None else now - js
        for c in self.cameras:
            s = self.newest_image_stamp(c)
            out[c] = math.inf if s is None else now - s
        return out

    def _joint_history(self) -> tuple[np.ndarray, np.ndarray]:
        n = min(self._jcount, self._jcap)
        start = (self._jcount - n) % self._jcap
        order = (start + np.arange(n)) % self._jcap
        return self._jstamps[order].copy(), self._jpos[order].copy()

    def observation(self, n_obs_steps: int, dt: float) -> Observation | None:
        """The newest observation: To frames spaced `dt` ending at the first camera's newest image.

        Early on, when the history is shorter than To*dt, the oldest frame is repeated (as the
        training data pads episode starts). None when a camera has no frame yet or the joint
        history does not cover the chosen image stamps to within `max_joint_gap`.
        """
        if n_obs_steps < 1 or not (dt > 0):
            raise ValueError(f"need n_obs_steps >= 1 and dt > 0, got {n_obs_steps}, {dt}")
        with self._lock:
            if not self._jcount or any(not self._images[c] for c in self.cameras):
                return None
            frames = {c: list(self._images[c]) for c in self.cameras}
            jt, jq = self._joint_history()
        ref = frames[self.cameras[0]]
        t_end = ref[-1][0]
        targets = t_end - dt * np.arange(n_obs_steps - 1, -1, -1, dtype=np.float64)
        images: dict[str, np.ndarray] = {}
        ref_stamps = np.empty(n_obs_steps)
        for c in self.cameras:
            stamps = np.array([s for s, _ in frames[c]])
            # Newest frame at or before each target (a small slack absorbs stamp rounding);
            # before the history starts, the oldest frame stands in.
            idx = np.searchsorted(stamps, targets + 1e-6, side="right") - 1
            idx = np.clip(idx, 0, len(stamps) - 1)
            images[c] = np.stack([frames[c][i][1] for i in idx])
            if c == self.cameras[0]:
                ref_stamps = stamps[idx]
        newest = ref_stamps[-1]
        if newest > jt[-1] + self.max_joint_gap or newest < jt[0] - self.max_joint_gap:
            return None  # the arm state at the newest image is unknown (joint states lag or gap)
        clamped = np.clip(ref_stamps, jt[0], jt[-1])
        if jt.shape[0] == 1:
            joints = np.repeat(jq, n_obs_steps, axis=0)
        else:
            joints = np.stack(
                [np.interp(clamped, jt, jq[:, j]) for j in range(jq.shape[1])], axis=1
            )
        return Observation(images=images, joints=joints, stamp=float(t_end))
