"""The inference thread: newest observation in, timestamped chunk out, never in the loop's way.

Every period the worker takes the newest observation, plans the warm start and the committed prefix
from the chunk the control loop is executing, runs the backend, and hands the chunk (t0 = the
observation's stamp) to the loop's mailbox. Nothing here waits on the loop: the loop only ever sees
finished chunks. Failures (exceptions, non-finite actions, refused chunks) are counted and reported,
and no chunk is submitted for them, so the loop's watchdogs take over if they persist.

With several samples per inference the spread of their first actions measures how unsure the policy
is (two modes, an unfamiliar scene); above a threshold the worker slows the chunk down, asks the
loop to hold, or only reports it. ROS-free.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffusion_controller.control.types import Chunk
from diffusion_controller.runtime import fault_hooks
from diffusion_controller.runtime.observation_buffer import ObservationBuffer
from diffusion_controller.runtime.planner import ChunkPlanner
from diffusion_controller.runtime.sampling_seed import observation_seed
from diffusion_controller.settings.controller import SPECS
from diffusion_controller.settings.spec import build, check_fields


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker does each period; replaced atomically by `InferenceWorker.update`.

    Every field is the controller setting of the same name (diffusion_controller/settings): its
    default, range and meaning are written there, and `worker_settings(values)` below builds this
    from a settings mapping. `image_timeout` is the oldest observation worth a chunk;
    `seed` -1 draws fresh noise every inference, otherwise each inference draws its noise from this
    seed hashed with its observation (runtime/sampling_seed.py), so a chunk depends on its
    observation alone and not on how many inferences the scheduling fitted in before it, and no
    two observations share their noise: eval sets the episode seed here. Every field is checked
    against the table; what depends on the model (`prefix_steps` below its horizon) the worker
    checks."""

    inference_rate_hz: float
    ddim_steps: int
    eta: float
    warm_start: bool
    warm_start_strength: float
    prefix_steps: int
    latency_margin: float
    num_samples: int
    seed: int
    image_timeout: float
    uncertainty_threshold: float
    uncertainty_action: str
    uncertainty_scale: float
    inference_frame_wait: float

    def __post_init__(self) -> None:
        check_fields(self, SPECS)


def worker_settings(values: Any) -> WorkerSettings:
    """The worker's settings from a settings mapping, each field the setting of the same name
    (here, not in control/assembly.py: control/ never imports runtime/)."""
    return build(WorkerSettings, values, SPECS)


@dataclass(frozen=True)
class WorkerStats:
    """An immutable snapshot for diagnostics."""

    running: bool
    inferences: int
    submitted: int
    rejected: int
    errors: int
    overruns: int
    skipped: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    last_latency_ms: float
    obs_age_p50_ms: float
    last_spread: float | None
    uncertain: bool
    holding: bool
    last_error: str
    last_reject_reason: str
    last_outcome: str
    last_timings_ms: dict[str, float] = field(default_factory=dict)
    inflight_s: float = 0.0  # how long the inference now running has taken so far (0: none)


class _Ring:
    """Preallocated window of recent float samples with cheap percentiles."""

    def __init__(self, size: int) -> None:
        self._data = np.full(size, np.nan)
        self._n = 0

    def add(self, x: float) -> None:
        self._data[self._n % self._data.shape[0]] = x
        self._n += 1

    def percentile(self, q: float) -> float:
        if self._n == 0:
            return math.nan
        return float(np.percentile(self._data[: min(self._n, self._data.shape[0])], q))


class InferenceWorker:
    """Runs `backend.infer` on the newest observation at `settings.inference_rate_hz` in its own
    thread.

    `submit(chunk)` hands a chunk to the control loop and may return an object with `accepted` and
    `reason` (the loop's SubmitResult); `current_chunk()` returns the chunk the loop executes now
    (defaults to the last chunk this worker submitted that was not refused); `clock()` is the stamp
    clock observations and chunks are stamped on; `hold(on, reason)` asks the loop to hold (and
    release) for the "hold" uncertainty action; `on_chunk(chunk, result)` sees every submitted chunk
    (visualisation); `thread_setup()` runs first in the worker thread (its scheduling priority).
Callbacks run in the worker thread.
    """

    def __init__(
        self,
        backend: Any,
        buffer: ObservationBuffer,
        submit: Callable[[Chunk], Any],
        clock: Callable[[], float],
        settings: WorkerSettings,
        current_chunk: Callable[[], Chunk | None] | None = None,
        hold: Callable[[bool, str], None] | None = None,
        on_chunk: Callable[[Chunk, Any], None] | None = None,
        window: int = 256,
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        cfg = backend.config
        self.backend = backend
        self.buffer = buffer
        self.horizon = int(cfg.horizon)
        self.action_dt = float(cfg.action_dt)
        self.n_obs_steps = int(cfg.n_obs_steps)
        self.num_joints = int(cfg.action_dim)  # arm joints, then gripper dims
        self._submit = submit
        self._clock = clock
        self._current_chunk = current_chunk
        self._hold = hold
        self._on_chunk = on_chunk
        self._thread_setup = thread_setup  # runs first in the worker thread (e.g. its priority)
        self._settings = settings
        self._check_settings(self._settings)
        self._lock = threading.Lock()  # guards counters and the last chunk, never held in infer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latency = _Ring(window)
        self._obs_age = _Ring(window)
        self._seq = 0
        self._inflight_since: float | None = None  # monotonic start of the running inference
        self._last_t0 = -math.inf
        self._last_chunk: Chunk | None = None
        self._scale = 1.0
        self._holding = False
        self._counts = {"inferences": 0, "submitted": 0, "rejected": 0, "errors": 0,
                        "overruns": 0}
        self._skipped: dict[str, int] = {}
        self._last: dict[str, Any] = {"latency_ms": math.nan, "spread": None, "uncertain": False,
                                      "error": "", "reject": "", "outcome": "", "timings": {}}

    # --- settings ----------------------------------------------------------------------------

    @property
    def settings(self) -> WorkerSettings:
        return self._settings

    def _check_settings(self, s: WorkerSettings) -> None:
        if s.prefix_steps >= self.horizon:
            raise ValueError(
                f"prefix_steps {s.prefix_steps} must be below the model's horizon {self.horizon}"
            )

    def update(self, **changes: Any) -> WorkerSettings:
        """Replace settings atomically (validated); takes effect at the next inference."""
        new = dataclasses.replace(self._settings, **changes)
        self._check_settings(new)
        self._settings = new
        return new

    # --- thread ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop and wait up to `timeout` (an inference in flight finishes)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self._thread = None
        if self._holding:
            self._set_hold(False, "")
        return True

    def reset(self) -> None:
        """Forget the previous chunk and the observation stamp (after a stop, before a restart)."""
        with self._lock:
            self._last_chunk = None
            self._last_t0 = -math.inf
            self._scale = 1.0

    def _run(self) -> None:
        if self._thread_setup is not None:
            try:
                self._thread_setup()
            except Exception as exc:  # reported, the worker runs anyway
                with self._lock:
                    self._last["error"] = f"thread setup: {type(exc).__name__}: {exc}"
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.step_once()
            period = 1.0 / self._settings.inference_rate_hz
            next_t += period
            now = time.monotonic()
            if now > next_t:  # overran: skip to the next future deadline, never burst
                missed = math.ceil((now - next_t) / period)
                with self._lock:
                    self._counts["overruns"] += missed
                next_t += missed * period
            if self._stop.wait(max(0.0, next_t - time.monotonic())):
                break
            wait = min(self._settings.inference_frame_wait, 0.5 / self._settings.inference_rate_hz)
            if wait > 0:
                # Start on a frame that has just landed: the observation is then only as old as
                # its transport, not up to a whole camera period older (end-to-end latency).
                self.buffer.wait_for_frame(self.buffer.newest_image_stamp(
                    self.buffer.cameras[0]), wait)

    # --- one inference -----------------------------------------------------------------------

    def _skip(self, why: str) -> str:
        with self._lock:
            self._skipped[why] = self._skipped.get(why, 0) + 1
            self._last["outcome"] = why
        return why

    def step_once(self) -> str:
        """One inference attempt; returns its outcome ("submitted" or why not)."""
        try:
            return self._step()
        except Exception as exc:  # reported, never raised into the thread
            with self._lock:
                self._counts["errors"] += 1
                self._last["error"] = f"{type(exc).__name__}: {exc}"
                self._last["outcome"] = "error"
            return "error"

    def current(self) -> Chunk | None:
        if self._current_chunk is not None:
            return self._current_chunk()
        with self._lock:
            return self._last_chunk

    def _step(self) -> str:
        s = self._settings
        obs = self.buffer.observation(self.n_obs_steps, self.action_dt)
        if obs is None:
            return self._skip("no observation")
        now = self._clock()
        if now - obs.stamp > s.image_timeout:
            return self._skip("stale observation")
        if obs.stamp <= self._last_t0:
            return self._skip("no new observation")
        t_start = time.perf_counter()
        expected = self._obs_age.percentile(90)
        expected = 0.0 if math.isnan(expected) else expected
        grid_dt = self.action_dt / self._scale
        planner = ChunkPlanner(self.horizon, grid_dt, self.num_joints,
                               prefix_steps=s.prefix_steps, latency_margin=s.latency_margin)
        plan = planner.plan(self.current(), obs.stamp, expected)
        seed = None if s.seed < 0 else observation_seed(s.seed, obs)
        warm = plan.warm_start if s.warm_start else None
        self._inflight_since = time.monotonic()
        try:
            # TEST HOOK (off unless its env var is set), where the network runs: here, unless
            # the backend runs it in a process of its own (which applies the hook there).
            fault = (fault_hooks.before_inference() if getattr(self.backend, "in_process", True)
                     else fault_hooks.NONE)
            result = self.backend.infer(
                obs,
                steps=s.ddim_steps,
                eta=s.eta,
                warm_start=warm,
                warm_start_strength=s.warm_start_strength if warm is not None else None,
                prefix=plan.prefix if s.prefix_steps > 0 else None,
                num_samples=s.num_samples,
                seed=seed,
            )
        finally:
            self._inflight_since = None
        actions = np.asarray(result.actions, dtype=np.float64)
        if fault.nan:
            actions = np.full_like(actions, np.nan)
        if actions.shape != (self.horizon, self.num_joints):
            raise ValueError(
                f"backend returned actions of shape {actions.shape}, expected "
                f"{(self.horizon, self.num_joints)}"
            )
        if not np.all(np.isfinite(actions)):
            raise ValueError("backend returned NaN or Inf actions")
        latency_ms = 1e3 * (time.perf_counter() - t_start)
        spread = None if result.spread is None else float(result.spread)
        uncertain = bool(
            spread is not None and s.uncertainty_threshold > 0 and spread > s.uncertainty_threshold
        )
        with self._lock:
            self._counts["inferences"] += 1
            self._latency.add(latency_ms)
            self._last_t0 = obs.stamp
            self._last.update(latency_ms=latency_ms, spread=spread, uncertain=uncertain,
                              timings=dict(getattr(result, "timings_ms", {}) or {}))
        reason = (f"uncertain: spread {spread:.3f} rad > {s.uncertainty_threshold:.3f}"
                  if uncertain else "")
        if uncertain and s.uncertainty_action == "hold":
            self._set_hold(True, reason)
            return self._skip("held: uncertain")
        if self._holding:
            self._set_hold(False, "")
        self._scale = s.uncertainty_scale if uncertain and s.uncertainty_action == "scale" else 1.0
        self._seq += 1
        chunk = Chunk(t0=float(obs.stamp), dt=self.action_dt / self._scale, positions=actions,
                      seq=self._seq)
        answer = self._submit(chunk)
        accepted = bool(getattr(answer, "accepted", True)) if answer is not None else True
        self._obs_age.add(max(0.0, self._clock() - obs.stamp))
        with self._lock:
            if accepted:
                self._counts["submitted"] += 1
                self._last_chunk = chunk
                self._last["outcome"] = "submitted"
            else:
                self._counts["rejected"] += 1
                self._last["reject"] = str(getattr(answer, "reason", ""))
                self._last["outcome"] = "rejected"
        if accepted and self._on_chunk is not None:
            self._on_chunk(chunk, result)
        return "submitted" if accepted else "rejected"

    def _set_hold(self, on: bool, reason: str) -> None:
        self._holding = on
        if self._hold is not None:
            self._hold(on, reason)

    # --- reporting ---------------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        with self._lock:
            return WorkerStats(
                running=self.running,
                inferences=self._counts["inferences"],
                submitted=self._counts["submitted"],
                rejected=self._counts["rejected"],
                errors=self._counts["errors"],
                overruns=self._counts["overruns"],
                skipped=dict(self._skipped),
                latency_p50_ms=self._latency.percentile(50),
                latency_p99_ms=self._latency.percentile(99),
                last_latency_ms=float(self._last["latency_ms"]),
                obs_age_p50_ms=1e3 * self._obs_age.percentile(50),
                last_spread=self._last["spread"],
                uncertain=bool(self._last["uncertain"]),
                holding=self._holding,
                last_error=str(self._last["error"]),
                last_reject_reason=str(self._last["reject"]),
                last_outcome=str(self._last["outcome"]),
                last_timings_ms=dict(self._last["timings"]),
                inflight_s=self.inflight_s(),
            )

    def inflight_s(self) -> float:
        """Seconds the running inference has taken so far (0.0 when none is running)."""
        since = self._inflight_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)
