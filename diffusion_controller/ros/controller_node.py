"""The controller as a ROS 2 lifecycle node: messages in, safety-filtered joint commands out.

The core (model, inference worker, scheduler, safety filter, watchdogs, 100 Hz loop) is
runtime.controller.Controller, ROS-free; this node only wires it: parameters (ros/params.py, one
request one change through ros/parameter_service.py), joint state and camera subscriptions, the
command publisher (ros/command_output.py), the operator's services (ros/operator_services.py), the
URDF (ros/urdf_source.py) and /diagnostics from the core's status snapshot.

Threads: the executor only runs callbacks; inference runs in the worker thread (and, with
`inference_mode: process`, the network in a child process); the loop thread publishes every
command from its output callback. Nothing the executor or inference does can make a tick wait.

Lifecycle: configure validates the parameters and builds the core (any failure returns FAILURE with
the reason logged and on /diagnostics, and nothing is published); activate starts the loop, then
inference; deactivate brakes to a stop, then stops the threads; cleanup releases everything;
shutdown and errors brake first. With `autostart` the node walks itself through configure and
activate with the same transition functions. Humble's rclpy API only.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from diffusion_controller.control.types import Chunk
from diffusion_controller.reliability import rt
from diffusion_controller.reliability.gc_guard import GcMonitor, freeze_heap
from diffusion_controller.ros import conversions as conv
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.ros import params
from diffusion_controller.ros.command_output import COMMAND_DEPTH, CommandOutput
from diffusion_controller.ros.gripper_io import gripper_output
from diffusion_controller.ros.operator_services import OperatorServices
from diffusion_controller.ros.parameter_service import (
    apply_parameter_request,
    serve_set_parameters_as_one_request,
)
from diffusion_controller.ros.urdf_source import read_urdf
from diffusion_controller.runtime.controller import BuildError, Controller
from diffusion_controller.runtime.controller_status import Refused
from diffusion_controller.runtime.joint_input import InputCounts

NODE_NAME = "diffusion_controller"
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
ConfigureError = BuildError  # configure cannot complete; the message is the operator's reason


class ControllerNode(LifecycleNode):
    """Lifecycle node wiring the controller core (runtime/controller.py) to ROS."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare_all(self)
        self._values = params.read_all(self)
        self._model_facts: params.ModelFacts | None = None
        self._pending: set[str] = set()
        self._core: Controller | None = None
        self._ros: list[Any] = []  # publishers and subscriptions of the configured core
        self._output: CommandOutput | None = None
        self._decoder: str | None = None
        self._chunk_pub = self._marker_pub = None  # display: ~/chunk, ~/chunk_markers
        self._active = False
        self._last_failure = ""
        self._counts = InputCounts()  # the node's whole life, across configure cycles
        self._rates = diag.CoreRates()
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        serve_set_parameters_as_one_request(self, self._service_group)
        self._gc = GcMonitor()
        self._operator = OperatorServices(
            self, self._service_group, bool(self._values["start_enabled"]),
            core=lambda: self._core, active=lambda: self._active,
            enable_timeout=lambda: float(self._values["enable_timeout"]),
            on_reset_statistics=self._gc.reset)
        self._clock_jump_note = ""
        self._gc.install()
        self._rt_threads: dict[str, Any] = {}
        # Diagnostics are published in every lifecycle state, so a failed configure is visible.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            1.0 / float(self._values["diagnostics_rate"]), self._publish_diagnostics,
            callback_group=self._diag_group)
        self._autostart_timer = None
        if self._values["autostart"]:
            self._autostart_timer = self.create_timer(0.01, self._autostart)

    def _now(self) -> float:
        """The stamp clock (the node's ROS clock, so sim time works)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _log_refused(self, refused: Refused | None) -> None:
        if refused is not None:
            self.get_logger().warning(f"rejected {refused.what}: {refused.reason}",
                                      throttle_duration_sec=2.0)

    def _autostart(self) -> None:
        if self._autostart_timer is not None:
            self._autostart_timer.cancel()
            self.destroy_timer(self._autostart_timer)
            self._autostart_timer = None
        self.get_logger().info("autostart: configure")
        if self.trigger_configure() != SUCCESS:
            self.get_logger().error(f"autostart: configure failed: {self._last_failure}")
            return
        self.get_logger().info("autostart: activate")
        if self.trigger_activate() != SUCCESS:
            self.get_logger().error(f"autostart: activate failed: {self._last_failure}")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        try:
            self._configure()
        except Exception as exc:
            reason = str(exc) if isinstance(exc, BuildError) else (
                f"{type(exc).__name__}: {exc}")
            self._last_failure = f"configure failed: {reason}"
            self.get_logger().error(self._last_failure)
            self._release()
            return FAILURE
        core = self._core
        assert core is not None
        self._pending.clear()
        self._last_failure = ""
        self.get_logger().info(
            f"configured in {time.monotonic() - t0:.2f} s: backend {core.backend.name}, "
            f"{len(core.robot.joint_names)} joints, cameras {core.cameras}, "
            f"compressed decoder {self._decoder or 'n/a'}")
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        core = self._core
        if core is None:
            self._last_failure = "activate: not configured"
            return FAILURE
        ret = super().on_activate(state)  # enables the lifecycle publishers
        if ret != SUCCESS:
            return ret
        # Collect once and freeze what survives (the whole configured core), so later collections
        # are short: a full one over the live heap holds the GIL for tens of ms.
        frozen = freeze_heap()
        self._gc.frozen = int(frozen["frozen"])
        if core.values["realtime"]:
            # No page of this process may be paged out and faulted back from disk mid-tick.
            err = rt.lock_memory()
            self._rt_threads["memory_locked"] = err is None
            if err:
                self._rt_threads.setdefault("errors", []).append(err)
                self.get_logger().warning(f"realtime: {err}")
        self.get_logger().info(f"heap frozen: {frozen['frozen']} objects, collect "
                               f"{frozen['collect_ms']:.1f} ms")
        op = self._operator
        core.start(op.enabled, float(self._values["enable_timeout"]), op.estop_latched)
        self._active = True
        self.get_logger().info("active: inference and control loop running")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._brake_and_stop("deactivate")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._brake_and_stop("shutdown")
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error transition: braking and releasing")
        self._brake_and_stop("error")
        self._release()
        return SUCCESS

    def _brake_and_stop(self, why: str) -> None:
        """Brake to a stop while still publishing, then stop inference and the loop."""
        self._active = False
        if self._core is not None:
            problem = self._core.brake_and_stop(timeout=3.0)
            if problem:
                self.get_logger().error(f"{why}: {problem}")

    def shutdown_safely(self, why: str = "process shutdown") -> None:
        """Called from main() on SIGINT/SIGTERM before the context goes: brake, then stop."""
        if self._core is not None and self._core.running:
            self.get_logger().info(f"{why}: braking to a stop")
        self._brake_and_stop(why)

    def _release(self) -> None:
        core, self._core = self._core, None
        self._active = False
        self._model_facts = None  # the next configure may load another model
        self._output = None
        if core is not None:
            core.close()
        ros, self._ros = self._ros, []
        for entity in ros:
            if hasattr(entity, "publish"):
                self.destroy_lifecycle_publisher(entity)
            else:
                self.destroy_subscription(entity)

    # ------------------------------------------------------------------ configure
    def _configure(self) -> None:
        v = params.read_all(self)
        self._values = dict(v)
        if not v["realtime"] and self._rt_threads:
            rt.lower_python_threads()
            rt.unlock_memory()
            self._rt_threads = {}
        core = Controller.build(
            v, lambda: read_urdf(self, v), self._now, on_command=self._on_command,
            on_chunk=self._on_chunk, on_hold=self._on_hold, on_clock_jump=self._on_clock_jump,
            counts=self._counts)
        self._core = core
        if v["realtime"]:
            self._rt_threads = core.rt_threads
        self._model_facts = core.model_facts
        self._decoder = conv.compressed_decoder()
        if v["image_transport"] == "compressed" and self._decoder is None:
            raise BuildError("image_transport is 'compressed' but no decoder is installed "
                             "(install Pillow or OpenCV), or use image_transport 'raw'")
        self._create_interfaces(core, v)

    def _create_interfaces(self, core: Controller, v: dict[str, Any]) -> None:
        if v["command_interface"] == "position":
            pub = self.create_lifecycle_publisher(
                Float64MultiArray, v["position_command_topic"], COMMAND_DEPTH)
        else:
            pub = self.create_lifecycle_publisher(
                JointTrajectory, v["trajectory_command_topic"], COMMAND_DEPTH)
        gripper = gripper_output(self, core, v)  # None for an arm-only model
        self._output = CommandOutput(pub, str(v["command_interface"]), core.robot.joint_names,
                                     core.loop.rate_hz, core.stream_every,
                                     float(v["trajectory_lead"]), gripper, self.get_logger())
        # a resync re-seeds from what the arm's controller runs while the stream is running
        core.loop.arm_reference = self._output.stream
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "~/chunk", 10)
        self._marker_pub = self.create_lifecycle_publisher(MarkerArray, "~/chunk_markers", 10)
        self._ros += [pub, self._chunk_pub, self._marker_pub]
        if gripper is not None:
            self._ros.append(gripper.publisher)
        self._ros.append(self.create_subscription(
            JointState, v["joint_states_topic"], self._on_joint_state, qos_profile_sensor_data,
            callback_group=self._sensor_group))
        compressed = v["image_transport"] == "compressed"
        for cam, topic in zip(core.cameras, v["image_topics"], strict=True):
            self._ros.append(self.create_subscription(
                CompressedImage if compressed else Image,
                topic.rstrip("/") + "/compressed" if compressed else topic,
                lambda m, c=cam: self._on_image(c, m, compressed=compressed),
                qos_profile_sensor_data, callback_group=self._image_group))
        rate = float(v["diagnostics_rate"])
        if abs(self._diag_timer.timer_period_ns * 1e-9 - 1.0 / rate) > 1e-9:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(1.0 / rate, self._publish_diagnostics,
                                                 callback_group=self._diag_group)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changed: list[Any]) -> SetParametersResult:
        return apply_parameter_request(changed, self._values, self._model_facts, self._core,
                                       self._pending, self.get_logger())

    # ------------------------------------------------------------------ sensors
    def _on_joint_state(self, msg: JointState) -> None:
        core = self._core
        if core is not None:
            self._log_refused(core.joint_state(msg.name, msg.position, msg.velocity,
                                               conv.stamp_to_sec(msg.header.stamp)))

    def _on_image(self, camera: str, msg: Any, compressed: bool) -> None:
        core = self._core
        if core is None:
            return
        if compressed:
            def decode() -> np.ndarray:
                return conv.decode_compressed(msg, core.image_size, self._decoder)
        else:
            def decode() -> np.ndarray:
                return conv.image_to_model(msg, core.image_size,
                                           str(self._values["camera_8uc3_order"]))
        self._log_refused(core.image(camera, conv.stamp_to_sec(msg.header.stamp), decode))

    # ------------------------------------------------------------------ core hooks
    def _on_command(self, cmd: Any) -> None:
        """Loop thread: publish one safety-filtered command."""
        output = self._output
        if output is not None:
            output(cmd)

    def _on_chunk(self, chunk: Chunk) -> None:
        """Worker thread: publish the accepted chunk and its end-effector path for display."""
        core = self._core
        if core is None or not self._values["publish_markers"] or self._chunk_pub is None:
            return
        frame = self._values["marker_frame"]
        self._chunk_pub.publish(conv.chunk_trajectory_msg(chunk, core.robot.joint_names, frame))
        path = core.ee_path(np.asarray(chunk.positions))
        if path is not None:  # None: a row outside what the model accepts, nothing to draw
            self._marker_pub.publish(conv.path_markers(path, frame, chunk.t0))

    def _on_hold(self, reason: str) -> None:
        self.get_logger().warning(f"holding: {reason}", throttle_duration_sec=2.0)

    def _on_clock_jump(self, note: str) -> None:
        self._clock_jump_note = note
        self.get_logger().warning(note)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        try:
            entries = self._diagnostic_entries()
        except Exception as exc:  # diagnostics must never take the node down
            entries = [diag.StatusEntry(f"{self.get_name()}: node", diag.ERROR,
                                        f"diagnostics failed: {type(exc).__name__}: {exc}")]
        self._diag_pub.publish(diag.to_msg(entries, self.get_clock().now().to_msg(),
                                           self.get_fully_qualified_name()))

    def _diagnostic_entries(self) -> list[diag.StatusEntry]:
        name, core, op = self.get_name(), self._core, self._operator
        state = "active" if self._active else ("inactive" if core is not None else "unconfigured")
        entries = [diag.node_entry(name, state, self._last_failure, sorted(self._pending),
                                   self._rt_threads, self._gc.summary(), self._clock_jump_note)]
        if core is None:
            return entries
        snap = core.status()
        enabled = op.enabled and (not self._active or snap.loop_enabled)  # deadman lapsed?
        entries += diag.core_entries(name, snap, self._rates, time.monotonic(), enabled,
                                     op.estop_latched, self._active)
        gripper = None if self._output is None else self._output.gripper
        if gripper is not None:
            entries.append(gripper.diagnostic(name))
        return entries


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point `controller`: spin the node; on SIGINT/SIGTERM brake to a stop, then exit."""
    args = list(sys.argv if argv is None else argv)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def _signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGTERM, _signal)
    node = ControllerNode()
    # Single-threaded on purpose: rclpy's MultiThreadedExecutor churns the GIL enough to make
    # the control loop miss ticks (measured: ~10 % missed at 100 Hz on a loaded 2-core machine,
    # none with this executor).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor,), name="executor", daemon=True)
    spinner.start()
    try:
        while not stop.wait(0.1) and spinner.is_alive():
            pass
    finally:
        node.shutdown_safely()
        executor.shutdown(timeout_sec=1.0)
        spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin(executor: SingleThreadedExecutor) -> None:
    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


if __name__ == "__main__":
    raise SystemExit(main())
