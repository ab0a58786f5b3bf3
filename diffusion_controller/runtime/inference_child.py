"""The inference process's own side: the shared-memory observation slot both processes map, and
the request loop the child runs (`python -m diffusion_controller.runtime.inference_child`, started
by runtime/inference_process.ProcessBackend). The child loads the backend, warms it up, then
answers one request at a time until its parent closes the socket or dies. ROS-free; no rclpy is
ever imported here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import mmap
import os
import signal
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import Connection

import numpy as np

from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.runtime import fault_hooks
from diffusion_controller.runtime.backend import Observation

PROTOCOL = 1


def _layout(cfg: PolicyConfig) -> tuple[dict[str, tuple[int, tuple[int, ...]]], int, int]:
    """Byte offsets and shapes of each camera's uint8 [To, H, W, 3] block, then the float64
    [To, J] joints; returns (images, joints_offset, total_size)."""
    to = int(cfg.n_obs_steps)
    h, w = int(cfg.image_size[0]), int(cfg.image_size[1])
    offset = 0
    images: dict[str, tuple[int, tuple[int, ...]]] = {}
    for cam in cfg.cameras:
        shape = (to, h, w, 3)
        images[cam] = (offset, shape)
        offset += int(np.prod(shape))
    offset = (offset + 7) // 8 * 8
    joints_offset = offset
    offset += to * int(cfg.action_dim) * 8
    return images, joints_offset, max(offset, 8)


class SharedObservation:
    """Numpy views of one observation slot on a shared-memory file."""

    def __init__(self, path: str, cfg: PolicyConfig, create: bool) -> None:
        self.path = path
        images, joints_offset, size = _layout(cfg)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.images = {cam: np.ndarray(shape, np.uint8, self._mm, off)
                       for cam, (off, shape) in images.items()}
        to, j = int(cfg.n_obs_steps), int(cfg.action_dim)
        self.joints = np.ndarray((to, j), np.float64, self._mm, joints_offset)

    def write(self, obs: Observation) -> None:
        for cam, view in self.images.items():
            view[...] = obs.images[cam]
        self.joints[...] = obs.joints

    def close(self) -> None:
        self.images = {}
        self.joints = np.zeros((0, 0))
        # a view still alive somewhere: the mapping then goes with the process
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()


def shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else (
        tempfile.gettempdir())


def _serve(conn: Connection) -> int:
    msg = conn.recv()
    if msg.get("op") != "init":
        conn.send({"seq": msg.get("seq"), "ok": False, "error": "expected init"})
        return 2
    spec = msg["spec"]
    seq = msg["seq"]
    try:
        if spec.get("cpus"):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.sched_setaffinity(0, [int(c) for c in spec["cpus"]])
        from diffusion_controller.runtime.loading import load_backend

        backend = load_backend(spec["model_dir"], backend=spec["backend"], fp16=spec["fp16"],
                               cache_dir=spec["cache_dir"], threads=spec["threads"])
        backend.warmup(int(spec["warmup_runs"]), steps=spec["warmup_steps"],
                       num_samples=int(spec.get("warmup_samples", 1)))
        shm = SharedObservation(spec["shm"], backend.config, create=False)
    except Exception as exc:
        conn.send({"seq": seq, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    conn.send({"seq": seq, "ok": True, "backend": backend.name, "pid": os.getpid(),
               "status": backend.status()})
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return 0  # the parent closed the connection or died
        seq = msg.get("seq")
        try:
            if msg["op"] == "warmup":
                backend.warmup(int(msg["n"]), steps=msg.get("steps"),
                               num_samples=int(msg.get("num_samples", 1)))
                conn.send({"seq": seq, "ok": True})
                continue
            fault = fault_hooks.before_inference()  # TEST HOOK (off unless its env var is set)
            if fault.exit:
                os._exit(3)
            obs = Observation(images={c: v.copy() for c, v in shm.images.items()},
                              joints=shm.joints.copy(), stamp=float(msg["stamp"]))
            result = backend.infer(obs, **msg["options"])
            actions = np.asarray(result.actions, dtype=np.float64)
            if fault.nan:
                actions = np.full_like(actions, math.nan)
            conn.send({"seq": seq, "ok": True, "actions": actions, "spread": result.spread,
                       "timings_ms": dict(result.timings_ms), "steps": int(result.steps)})
        except Exception as exc:
            try:
                conn.send({"seq": seq, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            except OSError:
                return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="policy inference server (started by the node)")
    parser.add_argument("--fd", type=int, required=True, help="socket inherited from the parent")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    # A restart is spawned from the node's real-time worker thread, whose policy a child
    # inherits: the network runs as an ordinary process, below every thread of the node.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    conn = Connection(args.fd)
    try:
        return _serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
