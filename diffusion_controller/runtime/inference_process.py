"""Inference in a process of its own, so the network never competes with the control loop for
the parent's GIL.

`ProcessBackend` looks like a `PolicyBackend` to the inference worker (`config`, `name`,
`warmup`, `infer`), but the backend itself lives in a child process started with
`python -m diffusion_controller.runtime.inference_child` (its side: runtime/inference_child.py; a
fresh interpreter: no fork of a
process holding DDS threads, no rclpy import in the child). Observations travel through a shared
memory file (an mmap in /dev/shm: the images are the only large data); requests and results (a
few small arrays: warm start, prefix, the action chunk) travel as pickled messages over a socket
pair. One request is in flight at a time, so the shared slot never needs a lock.

What the parent does while the child computes: the calling (inference-worker) thread waits in
`poll()`, which releases the GIL; the control loop is never involved. Failure handling:

- the child dies (crash, OOM kill, `kill -9`): the call raises `InferenceCrashed`; the next call
  starts a new child (with a back-off after repeated failures);
- no answer within `timeout` s: the child is killed (SIGKILL) and the call raises
  `InferenceTimeout`; the next call starts a new child;
- the backend raises in the child: the call raises `InferenceFailed` with the child's message and
  the child stays up.

In every case no chunk reaches the loop, whose chunk watchdog then brakes to a stop; a chunk from a
restarted child resumes motion. Restart, crash and timeout counts are kept for /diagnostics.
ROS-free.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from diffusion_controller.policy.artifact import load_config
from diffusion_controller.policy.config import PolicyConfig
from diffusion_controller.runtime.backend import InferenceResult, Observation
from diffusion_controller.runtime.inference_child import PROTOCOL, SharedObservation, shm_dir


class InferenceUnavailable(RuntimeError):
    """The inference process is not running (starting, restarting or failed to start)."""


class InferenceCrashed(InferenceUnavailable):
    """The inference process died during a request."""


class InferenceTimeout(RuntimeError):
    """No result within the timeout: the process was killed and will be restarted."""


class InferenceFailed(RuntimeError):
    """The backend raised in the inference process (the process is still up)."""


class ProcessBackend:
    """A policy backend run in a child process; see the module docstring."""

    in_process = False  # the network does not run in the caller's process

    def __init__(
        self,
        model_dir: str,
        backend: str = "auto",
        *,
        fp16: bool = False,
        cache_dir: str | None = None,
        threads: int | None = None,
        timeout: float = 1.0,
        start_timeout: float = 120.0,
        warmup_runs: int = 1,
        warmup_steps: int | None = None,
        warmup_samples: int = 1,
        cpus: Sequence[int] | None = None,
        python: str | None = None,
    ) -> None:
        self.model_dir = os.fspath(model_dir)
        cfg, normalizers, meta = load_config(self.model_dir)  # no torch: checked in the parent
        self._config = cfg
        self.normalizers = normalizers
        self.meta = meta
        self.requested_backend = backend
        self.fp16 = bool(fp16)
        self.cache_dir = cache_dir
        self.threads = threads
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.warmup_runs = int(warmup_runs)
        self.warmup_steps = warmup_steps
        self.warmup_samples = int(warmup_samples)
        self.child_status: dict[str, Any] = {}  # the child backend's status() at its start
        self.cpus = list(cpus) if cpus is not None else None
        self.python = python or sys.executable
        self.name = f"{backend} (process)"
        self.child_backend = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._shm: SharedObservation | None = None
        self._seq = 0
        self._lock = threading.Lock()  # one request at a time; start/stop exclusive with it
        self.starts = 0
        self.crashes = 0
        self.timeouts = 0
        self.failures = 0  # consecutive failed starts or crashes (for the back-off)
        self.last_error = ""
        self._not_before = 0.0  # monotonic time before which no restart is attempted

    # --- PolicyBackend look-alike ------------------------------------------------------------
    @property
    def config(self) -> PolicyConfig:
        return self._config

    @property
    def kind(self) -> str:
        return self._config.kind

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def status(self) -> dict[str, Any]:
        """Counters for /diagnostics."""
        return {"pid": self.pid or 0, "starts": self.starts, "crashes": self.crashes,
                "timeouts": self.timeouts, "child_backend": self.child_backend,
                "last_error": self.last_error,
                "first_inference_ms": float(self.child_status.get("first_inference_ms", -1.0)),
                "max_samples": int(self.max_samples)}

    @property
    def max_samples(self) -> int:
        """The child backend's limit (known once it started), else the generic one."""
        from diffusion_controller.runtime.backend import MAX_SAMPLES

        return int(self.child_status.get("max_samples", MAX_SAMPLES))

    def check_num_samples(self, num_samples: int) -> int:
        """ValueError when the child backend cannot run `num_samples` (see PolicyBackend)."""
        from diffusion_controller.runtime.backend import PolicyBackend

        k = PolicyBackend._check_num_samples(num_samples)
        if k > self.max_samples:
            raise ValueError(f"num_samples {k} exceeds the {self.max_samples} the "
                             f"{self.child_backend or 'child'} backend was built for")
        return k

    def warmup(self, n: int = 1, steps: int | None = None, num_samples: int = 1) -> None:
        """Warm-up runs in the child: at start() (its `warmup_runs`), and here on request."""
        with self._lock:
            self._ensure_started()
            self._request({"op": "warmup", "n": int(n), "steps": steps,
                           "num_samples": int(num_samples)}, self.start_timeout)

    def infer(self, obs: Observation, **options: Any) -> InferenceResult:
        """One chunk from the child; raises InferenceUnavailable / InferenceCrashed /
        InferenceTimeout / InferenceFailed (see the module docstring), never blocks the GIL."""
        with self._lock:
            self._ensure_started()
            assert self._shm is not None
            self._shm.write(obs)
            small = {k: (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v)
                     for k, v in options.items()}
            reply = self._request({"op": "infer", "stamp": float(obs.stamp), "options": small},
                                  self.timeout)
        actions = np.asarray(reply["actions"], dtype=np.float64)
        return InferenceResult(actions=actions, samples=None, spread=reply.get("spread"),
                               timings_ms=dict(reply.get("timings_ms", {})),
                               stamp=float(obs.stamp), steps=int(reply.get("steps", 0)),
                               backend=self.name)

    # --- process management ------------------------------------------------------------------
    def start(self) -> None:
        """Start the child and wait until its model is loaded and warmed up (raises on failure
        with the child's reason, e.g. a corrupt artifact)."""
        with self._lock:
            self._not_before = 0.0
            self._ensure_started()

    def close(self) -> None:
        """Stop the child (EOF, then SIGKILL if it does not go) and remove the shared file."""
        with self._lock:
            self._kill("closed", graceful=True)

    def kill_child(self) -> None:
        """Test and operator hook: SIGKILL the child now (the next call restarts it)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            return
        if self._proc is not None:  # it died since the last call
            code = self._proc.poll()
            self._kill(f"inference process exited (code {code})", graceful=False)
        now = time.monotonic()
        if now < self._not_before:
            raise InferenceUnavailable(
                f"inference process restart in {self._not_before - now:.1f} s "
                f"(last error: {self.last_error})")
        try:
            self._spawn()
        except Exception as exc:
            self.failures += 1
            self._not_before = time.monotonic() + min(10.0, 0.5 * 2 ** min(self.failures, 5))
            self.last_error = f"start failed: {exc}"
            self._kill(self.last_error, graceful=False)
            raise InferenceUnavailable(self.last_error) from exc
        self.failures = 0

    def _spawn(self) -> None:
        path = os.path.join(shm_dir(), f"dc_obs_{os.getpid()}_{self.starts}_{time.time_ns()}")
        self._shm = SharedObservation(path, self._config, create=True)
        parent, child = socket.socketpair()
        env = dict(os.environ)
        if self.threads:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        self._proc = subprocess.Popen(
            [self.python, "-m", "diffusion_controller.runtime.inference_child",
             "--fd", str(child.fileno())],
            pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
            start_new_session=False,
        )
        child.close()
        self._conn = Connection(parent.detach())
        self.starts += 1
        spec = {
            "protocol": PROTOCOL, "model_dir": self.model_dir, "backend": self.requested_backend,
            "fp16": self.fp16, "cache_dir": self.cache_dir, "threads": self.threads,
            "shm": path, "warmup_runs": self.warmup_runs, "warmup_steps": self.warmup_steps,
            "warmup_samples": self.warmup_samples, "cpus": self.cpus, "parent": os.getpid(),
        }
        reply = self._request({"op": "init", "spec": spec}, self.start_timeout)
        self.child_backend = str(reply.get("backend", ""))
        self.child_status = dict(reply.get("status", {}))
        self.name = f"{self.child_backend} (process)"

    def _request(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            raise InferenceUnavailable("inference process not running")
        self._seq += 1
        msg["seq"] = self._seq
        try:
            conn.send(msg)
            deadline = time.monotonic() + timeout
            while True:
                # Short polls so a dead child is noticed at once, not only at the deadline.
                if conn.poll(min(0.05, max(0.0, deadline - time.monotonic()))):
                    reply = conn.recv()
                    if reply.get("seq") == self._seq:
                        break
                    continue  # an answer to an abandoned request: drop it
                if proc.poll() is not None:
                    raise EOFError(f"exit code {proc.returncode}")
                if time.monotonic() >= deadline:
                    self.timeouts += 1
                    self._kill(f"no answer within {timeout:g} s: inference process killed",
                               graceful=False)
                    raise InferenceTimeout(self.last_error)
        except (EOFError, OSError, BrokenPipeError) as exc:
            self.crashes += 1
            self.failures += 1
            self._not_before = time.monotonic() + min(10.0, 0.25 * 2 ** min(self.failures, 5))
            code = proc.poll()
            self._kill(f"inference process died ({exc}; exit code {code})", graceful=False)
            raise InferenceCrashed(self.last_error) from exc
        if not reply.get("ok", False):
            err = str(reply.get("error", "unknown error"))
            if msg["op"] == "init":
                self.last_error = err
                raise RuntimeError(err)
            raise InferenceFailed(err)
        self.failures = 0
        return reply

    def _kill(self, why: str, graceful: bool) -> None:
        proc, conn, shm = self._proc, self._conn, self._shm
        self._proc = self._conn = self._shm = None
        if why and why != "closed":
            self.last_error = why
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()  # EOF: an idle child exits by itself
        if proc is not None:
            if graceful:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2.0)
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        if shm is not None:
            shm.close()
            with contextlib.suppress(OSError):
                os.unlink(shm.path)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._kill("closed", graceful=False)


if __name__ == "__main__":  # the child's entry point, as started before it had a module of its own
    from diffusion_controller.runtime.inference_child import main

    raise SystemExit(main())
