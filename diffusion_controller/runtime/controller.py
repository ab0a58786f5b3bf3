"""The whole controller core, built from setting values, a URDF and a model artifact; ROS-free.

`Controller.build(values, urdf, clock, ...)` checks the settings against the table, loads the model
(runtime/controller_build.py), builds the robot model and safety filter through control/assembly.py
(the same path `bench safety` measures), the chunk scheduler, the watchdogs and the 100 Hz control
loop, the observation buffer and the inference worker, and wires the worker to the loop, mapping
the model's joint order onto the controller's. A host (the lifecycle node, a test, a bench) then
only feeds it inputs and takes its outputs:

    inputs   joint_state(names, positions, velocities, stamp), image(camera, stamp, decode),
             enable / estop / reset / reset_statistics, apply_live(changes)
    outputs  on_command(Command) from the loop thread; on_chunk(Chunk) (controller order) and
             on_hold(reason) from the worker thread; on_clock_jump(note) from the loop thread;
             gripper_command(stamp) for each published arm command, when the model has a
             gripper; status() -> ControllerStatus, an immutable snapshot for diagnostics

A gripper model (cfg.gripper) has its gripper dims after the arm's in every state and action
vector: `self.gripper` (control/gripper.GripperPath) then reads the finger joints from each joint
state beside the arm's, takes each chunk's gripper dims before the arm's part reaches the loop,
and turns them into one clamped, rate-limited command per published arm command that holds
whenever the arm does not track a chunk. Without one, `self.gripper` is None and nothing changes.

Start and stop keep the safe order: `start` starts the loop before inference; `brake_and_stop`
brakes the loop to a standstill first (the arm is at rest within its braking time whatever
inference is doing), and only then stops inference, which can take up to its timeout.

Threads: inputs come from any thread and never wait on the loop (ControlLoop's snapshots and
mailbox); a live change waits for the loop to run its swap between two ticks.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from diffusion_controller.control import assembly
from diffusion_controller.control.gripper import GripperPath, GripperSettings
from diffusion_controller.control.loop_status import RUNNING
from diffusion_controller.control.types import Chunk, Command
from diffusion_controller.reliability import rt
from diffusion_controller.runtime import live_changes
from diffusion_controller.runtime.controller_build import BuildError, load_model, model_facts
from diffusion_controller.runtime.controller_status import ControllerStatus, Refused
from diffusion_controller.runtime.joint_input import (
    InputCounts,
    InputRejected,
    JointOrder,
    JointStateFilter,
)

__all__ = ["BuildError", "Controller"]


class Controller:
    """The core under a host; see the module docstring. Build with `Controller.build`."""

    def __init__(self, values: Mapping[str, Any], cfg: Any, backend: Any, urdf: str,
                 clock: Callable[[], float], *,
                 on_command: Callable[[Command], None],
                 on_chunk: Callable[[Chunk], None] | None = None,
                 on_hold: Callable[[str], None] | None = None,
                 on_clock_jump: Callable[[str], None] | None = None,
                 counts: InputCounts | None = None) -> None:
        """Assemble the core around a loaded backend (`build` loads it); BuildError says why
        not. The caller owns the backend until this returns."""
        from diffusion_controller.control.chunk_scheduler import ChunkScheduler
        from diffusion_controller.control.loop import ControlLoop, spin_for, switch_interval_for
        from diffusion_controller.control.robot_model import RobotModel
        from diffusion_controller.control.watchdogs import Watchdogs
        from diffusion_controller.runtime.observation_buffer import ObservationBuffer
        from diffusion_controller.runtime.worker import InferenceWorker, worker_settings

        v = dict(values)
        self.values = v
        self.model_config = cfg
        self.model_facts = model_facts(cfg)  # what the settings are checked against from now on
        self.backend = backend
        self.urdf = urdf
        self.counts = counts if counts is not None else InputCounts()
        self._clock = clock
        self._input_lock = threading.Lock()  # inputs (ROS threads) against a clock-jump reset
        self._on_chunk_hook = on_chunk
        self._on_hold_hook = on_hold
        self._on_clock_jump_hook = on_clock_jump
        names = list(v["joint_names"])
        affinity = int(v["cpu_affinity"])
        rate = float(v["control_rate_hz"])

        # Robot and safety. The display model has its own pinocchio data (the worker thread's).
        try:
            self.viz_robot = RobotModel.from_urdf(urdf, joint_names=names,
                                                  ee_frame=v["ee_frame"] or None)
        except ValueError as exc:
            raise BuildError(f"URDF does not fit joint_names: {exc}") from exc
        try:
            self.robot, safety = assembly.safety_filter_from_settings(urdf, v)
        except ValueError as exc:
            raise BuildError(f"safety filter: {exc}") from exc
        scheduler = ChunkScheduler(len(names), assembly.scheduler_config(v, safety.limits))
        watchdogs = Watchdogs(assembly.watchdog_config(v), joint_names=names)
        self.loop = ControlLoop(
            safety, scheduler, watchdogs, on_command, rate_hz=rate, clock=clock,
            realtime=bool(v["realtime"]), priority=int(v["realtime_priority"]),
            cpus=[affinity] if affinity >= 0 else None, on_clock_jump=self._clock_jumped,
            spin_s=spin_for(rate))
        # A busy inference or executor thread hands the GIL over sooner: bounded tick delay.
        sys.setswitchinterval(switch_interval_for(rate, fraction=1 / 50, floor=0.0001))
        # With the trajectory interface every command carries the filter's certified
        # continuation: the horizon after the last message of a streaming gap as well.
        self.stream_every = 1
        if v["command_interface"] == "trajectory":
            self.stream_every = max(1, round(rate / float(v["trajectory_rate_hz"])))
            self.loop.plan_steps = math.ceil(float(v["trajectory_horizon"]) * rate - 1e-9) + (
                self.stream_every - 1)
            # missed ticks: the arm's controller ran the last message's continuation meanwhile
            self.loop.follow_on_miss = True

        # Inference side, in the model's joint order.
        try:
            self.joints = JointOrder.between(names, list(cfg.joint_names))
        except ValueError as exc:
            raise BuildError(str(exc)) from exc
        self.gripper = self._gripper_path(cfg, len(names), v, rate)
        self.cameras = list(cfg.cameras)
        self.image_size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
        self.buffer = ObservationBuffer(list(cfg.dim_names), self.cameras, self.image_size,
                                        max_joint_gap=max(0.05, float(v["joint_state_timeout"])))
        # A gripper model needs its finger joints in every joint state, as the arm's.
        read = names + (self.gripper.joints if self.gripper is not None else [])
        self.joint_filter = JointStateFilter(read, stamp_tolerance=float(v["stamp_tolerance"]))
        # The threads sharing the loop's GIL run just below the loop's real-time priority, so
        # none of them can be preempted by unrelated load while holding it (reliability/rt.py).
        setup = None
        self.rt_threads: dict[str, Any] = {}
        if v["realtime"]:
            helper_prio = max(1, int(v["realtime_priority"]) - 10)
            self.rt_threads = rt.raise_python_threads(helper_prio)
            setup = lambda: rt.set_fifo(0, helper_prio)  # noqa: E731 (the worker thread's own)
        self.worker = InferenceWorker(
            backend, self.buffer, self._submit_chunk, clock, worker_settings(v),
            current_chunk=self._current_chunk_model_order, hold=self._uncertainty_hold,
            on_chunk=self._chunk_accepted, thread_setup=setup)

    def _gripper_path(self, cfg: Any, arm: int, v: Mapping[str, Any],
                      rate: float) -> GripperPath | None:
        """The gripper's path when the model has one. It steps once per published arm message:
        every tick (position interface) or every streamed trajectory, so its rate limit per
        step covers that period."""
        if cfg.gripper is None:
            return None
        try:
            settings = GripperSettings.from_values(v)
        except ValueError as exc:
            raise BuildError(f"gripper: {exc}") from exc
        return GripperPath(cfg.gripper, arm, settings, self.stream_every / rate)

    @classmethod
    def build(cls, values: Mapping[str, Any], urdf: str | Callable[[], str],
              clock: Callable[[], float], **hooks: Any) -> Controller:
        """Check the settings, load the model, then assemble the core; BuildError (the
        operator's reason) if not.

        `values` are checked against the settings table, then against the model's config before
        its backend loads; `urdf` may be a function, called once the model has loaded (so a bad
        model fails before any wait for a robot description). `hooks`: see `__init__`."""
        cfg, backend = load_model(values)
        try:
            text = urdf() if callable(urdf) else urdf
            return cls(values, cfg, backend, text, clock, **hooks)
        except BaseException:
            close = getattr(backend, "close", None)
            if close is not None:
                close()  # the inference process
            raise

    # ------------------------------------------------------------------ life
    @property
    def safety(self) -> Any:
        """The safety filter in force (a live change swaps it)."""
        return self.loop.safety

    @property
    def running(self) -> bool:
        return self.loop.running

    def start(self, enabled: bool, enable_timeout: float = 0.0,
              estop_latched: bool = False) -> None:
        """Start the loop, then inference; a latched e-stop stays latched."""
        self.worker.reset()
        if estop_latched:
            self.loop.estop()
        self.loop.set_enabled(enabled, float(enable_timeout))
        self.loop.start()
        self.worker.start()

    def brake_and_stop(self, timeout: float = 3.0) -> str:
        """Brake to a stop while still publishing, then stop the loop and inference.

        Returns "" when the loop reached a stop, else what went wrong (for the host to log)."""
        problem = ""
        loop = self.loop
        if loop.running:
            loop.set_enabled(False)
            deadline = time.monotonic() + timeout
            while loop.state != "inactive" and time.monotonic() < deadline:
                time.sleep(0.005)
            if loop.state != "inactive":
                problem = (f"the loop did not reach a stop within {timeout} s "
                           f"(state {loop.state})")
        loop.stop(timeout=1.0)
        self.worker.stop(timeout=2.0)
        return problem

    def close(self) -> None:
        """Stop both threads and release the backend (the inference process)."""
        self.worker.stop(timeout=2.0)
        self.loop.stop(timeout=1.0)
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ operator
    def enable(self, on: bool, timeout: float = 0.0) -> None:
        """Enable motion (a deadman's for `timeout` s when > 0), or brake to a stop."""
        self.loop.set_enabled(on, float(timeout))

    def estop(self) -> None:
        self.loop.estop()

    def reset(self) -> tuple[bool, str]:
        """Clear the e-stop once the arm is at rest: (done, why)."""
        return self.loop.reset()

    def reset_statistics(self) -> None:
        self.loop.reset_statistics()

    def apply_live(self, changes: Mapping[str, Any]) -> None:
        """Apply a set of live setting changes as one change; ValueError (the reason) when it
        cannot be taken, and then nothing has changed (runtime/live_changes.py)."""
        live_changes.apply(self, changes)

    # ------------------------------------------------------------------ inputs (any thread)
    def joint_state(self, names: Sequence[str], positions: Sequence[float],
                    velocities: Sequence[float], stamp: float) -> Refused | None:
        """A measured joint state, matched by name; None when taken, else why it was refused."""
        self.counts.got("joint_states")
        with self._input_lock:  # the clock is read and the state stored before a jump resets
            try:
                s = self.joint_filter.check(names, positions, velocities, stamp, self._clock())
            except InputRejected as exc:
                return self._refuse("joint_states", exc.kind, exc.reason)
            if self.gripper is None:
                self.loop.update_joint_state(s.positions, s.velocities, s.stamp)
                self.buffer.add_joints(s.stamp, self.joints.model_from_controller(s.positions))
                return None
            # [arm..., fingers...]: the arm to the loop, the model's state (arm, gripper dims)
            # to the buffer; the measured gripper dims to the gripper's commander
            q, qd, state = self.gripper.joint_sample(s.positions, s.velocities,
                                                     self.joints.to_model)
            self.loop.update_joint_state(q, qd, s.stamp)
            self.buffer.add_joints(s.stamp, state)
        return None

    def image(self, camera: str, stamp: float, decode: Callable[[], np.ndarray]
              ) -> Refused | None:
        """A camera frame: the stamp is checked first, then `decode()` (RGB at `image_size`,
        InputRejected when it cannot) runs, so a badly stamped frame costs no decoding."""
        self.counts.got("images")
        what = f"image[{camera}]"
        now = self._clock()
        try:
            if stamp <= 0.0:
                raise InputRejected("stamp", "image stamp is unset (zero)")
            if stamp > now + float(self.values["stamp_tolerance"]):
                raise InputRejected("future", f"image stamp is {stamp - now:.3f} s in the future")
            img = decode()
        except InputRejected as exc:
            return self._refuse(what, exc.kind, exc.reason)
        with self._input_lock:  # re-checked against the clock now: it may have jumped back
            now = self._clock()
            if stamp > now + float(self.values["stamp_tolerance"]):
                return self._refuse(what, "future",
                                    f"image stamp is {stamp - now:.3f} s in the future")
            reason = self.buffer.add_image(camera, stamp, img)
        if reason is not None:
            return self._refuse(what, "order", reason)
        newest = self.buffer.newest_image_stamp()  # the oldest camera's newest frame
        if newest is not None:
            self.loop.note_image(newest)
        return None

    def _refuse(self, what: str, kind: str, reason: str) -> Refused:
        self.counts.refused(what, kind, reason)
        return Refused(what, kind, reason)

    # ------------------------------------------------------------------ outputs
    def ee_path(self, q_rows: np.ndarray) -> np.ndarray | None:
        """End-effector positions [H, 3] of joint rows (controller order), None when a row is
        outside what the model accepts (worker thread: the display model's own data)."""
        try:
            return np.stack([self.viz_robot.ee_position(row) for row in q_rows])
        except ValueError:
            return None

    def gripper_command(self, stamp: float) -> np.ndarray | None:
        """Loop thread, with each published arm message: the gripper joints' position commands
        for the arm command stamped `stamp` (the current chunk's gripper dims while the arm
        tracks it, else the last command held); None without a gripper or before its first
        measurement."""
        gripper = self.gripper
        if gripper is None:
            return None
        loop = self.loop
        cur = loop.current_chunk()
        return gripper.command(stamp, loop.state == RUNNING, None if cur is None else cur.seq)

    def status(self) -> ControllerStatus:
        """An immutable snapshot of the loop, inference and inputs."""
        received, rejected, last = self.counts.snapshot()
        for kind, count in self.joint_filter.rejected.items():
            rejected.setdefault(f"joint_states_{kind}", count)
        backend = self.backend
        return ControllerStatus(
            loop=self.loop.status(), worker=self.worker.stats(),
            worker_settings=self.worker.settings, backend=backend.name,
            backend_status=backend.status() if hasattr(backend, "status") else None,
            inference_mode=str(self.values["inference_mode"]),
            chunk_timeout=float(self.values["chunk_timeout"]),
            received=received, rejected=rejected, last_rejection=last,
            input_ages=self.buffer.ages(self._clock()), loop_enabled=self.loop.enabled)

    # ------------------------------------------------------------------ worker and loop hooks
    def _submit_chunk(self, chunk: Chunk) -> Any:
        """Worker thread: model joint order -> controller order, into the loop's mailbox (a
        gripper model's gripper dims stay with the gripper)."""
        if self.gripper is not None:
            chunk = self.gripper.split(chunk)
        positions = self.joints.controller_from_model(chunk.positions)
        return self.loop.submit_chunk(Chunk(chunk.t0, chunk.dt, positions, chunk.seq))

    def _current_chunk_model_order(self) -> Chunk | None:
        cur = self.loop.current_chunk()
        if cur is None:
            return None
        model = Chunk(cur.t0, cur.dt, self.joints.model_from_controller(cur.positions), cur.seq)
        return model if self.gripper is None else self.gripper.join(model)

    def _uncertainty_hold(self, on: bool, reason: str) -> None:
        if on:
            self.loop.pause()
            if self._on_hold_hook is not None:
                self._on_hold_hook(reason)
        else:
            self.loop.resume()

    def _chunk_accepted(self, chunk: Chunk, result: Any) -> None:
        """Worker thread: every submitted chunk, in controller order, to the host (display);
        the arm's joints only (a gripper's dims, after them, are not picked)."""
        if self._on_chunk_hook is None:
            return
        q = self.joints.controller_from_model(chunk.positions)
        self._on_chunk_hook(Chunk(chunk.t0, chunk.dt, q, chunk.seq))

    def _clock_jumped(self, delta: float) -> None:
        """Loop thread: the stamp clock jumped by `delta` s. Forget the old timeline (under the
        input lock, so no input checked against the old clock is stored after this)."""
        with self._input_lock:
            self.joint_filter.reset()
            self.buffer.clear()
        self.worker.reset()
        way = f"back {-delta:.3f} s" if delta < 0 else f"forward {delta:.3f} s"
        if self._on_clock_jump_hook is not None:
            self._on_clock_jump_hook(f"stamp clock jumped {way}: braked, input stamps reset")
