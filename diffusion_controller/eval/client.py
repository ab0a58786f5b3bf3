"""The evaluation's own ROS node: it watches the simulator and the controller and calls their
services, over the same topics and services an operator's tools would use.

Callbacks run in one executor thread and only record (and check commands); everything that calls
a service runs in the caller's thread (the episode loop), so no callback ever waits on another.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.srv import GetState
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from diffusion_controller.control.types import Sphere
from diffusion_controller.eval.metrics import DiagSample, EpisodeTrace, diag_sample
from diffusion_controller.eval.safety_check import CheckCounts, CommandChecker
from diffusion_controller.service_client import (
    ServiceCallError,
    ServiceTimeoutError,
    ServiceUnavailableError,
    call_service,
)
from diffusion_controller.sim.tasks import spec_from_json

ACTIVE = 3  # lifecycle_msgs/State.PRIMARY_STATE_ACTIVE


class EvalError(RuntimeError):
    """The evaluation cannot go on; the message says why (and what the logs said)."""


def _latched() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


class EvalClient(Node):
    """Records one episode at a time into an EpisodeTrace and checks every command."""

    def __init__(
        self,
        context: Any,
        *,
        controller: str = "diffusion_controller",
        sim: str = "sim_arm",
        command_topic: str = "/forward_position_controller/commands",
        trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory",
        contacts_topic: str = "/sim/contacts",
        task_topic: str = "/sim/task",
        robot_description_topic: str = "/robot_description",
    ) -> None:
        super().__init__("diffusion_controller_eval", context=context)
        self.controller = controller
        self.sim = sim
        self._lock = threading.Lock()
        self._service_clients: dict[tuple[Any, str], Any] = {}
        self.checker: CommandChecker | None = None
        self.urdf: str | None = None
        self.last_diag: DiagSample | None = None
        self.node_message = ""
        self.last_command_time = -math.inf
        self.idle = CheckCounts()  # commands seen while no episode is being recorded
        self.verdict = threading.Event()
        self._trace: EpisodeTrace | None = None
        self._episode: int | None = None
        self._commands_until = math.inf
        self._pending_task: Any = None  # a task spec (sim/tasks.py) with a moved obstacle
        # A robot-side reflex ends the episode at once (the arm then holds for good): set for
        # tasks where nothing can come of the rest of the episode but the timeout.
        self.end_on_reflex = False
        self._stream_seen: dict[float, np.ndarray] = {}  # the last message's points by time
        self._stream_recorded = -math.inf  # time of the last streamed point recorded
        self.create_subscription(Float64MultiArray, command_topic, self._on_command, 100)
        # The trajectory interface is checked as strictly: every point of every message.
        self.create_subscription(JointTrajectory, trajectory_topic, self._on_trajectory, 100)
        self.create_subscription(String, contacts_topic, self._on_contacts, 50)
        self.create_subscription(String, task_topic, self._on_task, _latched())
        self.create_subscription(String, robot_description_topic, self._on_urdf, _latched())
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)

    # ------------------------------------------------------------------ callbacks
    def _on_urdf(self, msg: String) -> None:
        if msg.data.strip():
            self.urdf = msg.data

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """Every point of every message is checked (CommandChecker.check_point): each one is
        something the arm's controller may execute. Points repeated from the previous message
        (same time, same positions: the stream repeats its recent commands) are checked once.
        The trace records each command once, when a newer message starts after it: the points
        of the previous message that are now in the past (one per control tick). Points are
        reordered to the checker's joints when the names match; a message of the wrong shape
        counts as malformed."""
        with self._lock:
            names = list(self.checker.limits.names) if self.checker is not None else []
        if not msg.points:
            return  # an empty trajectory: joint_trajectory_controller refuses it
        sent = list(msg.joint_names)
        order = ([sent.index(n) for n in names]
                 if sorted(sent) == sorted(names) and names else None)  # fmt: skip
        t0 = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        points: list[tuple[float, np.ndarray, np.ndarray | None]] = []
        for pt in msg.points:
            q = np.asarray(pt.positions, dtype=np.float64)
            v: np.ndarray | None = np.asarray(pt.velocities, dtype=np.float64)
            if order is not None and q.shape == (len(sent),):
                q = q[order]
                v = v[order] if v is not None and v.shape == (len(sent),) else None
            elif names:
                q, v = np.full(len(names) + 1, np.nan), None  # wrong joints: malformed
            tfs = pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec
            points.append((round(t0 + tfs, 6), q, v))
        now = time.monotonic()
        with self._lock:
            self.last_command_time = now
            checker, trace = self.checker, self._trace
            seen = self._stream_seen
            self._stream_seen = {t: q for t, q, _ in points}
            if checker is None:
                return
            saved = None
            if trace is None:
                saved, checker.counts = checker.counts, self.idle
            prev: tuple[np.ndarray, float] | None = None
            for t, q, v in points:
                old = seen.get(t)
                if old is None or old.shape != q.shape or not np.array_equal(old, q):
                    checker.check_point(q, v, prev, t)
                prev = (q, t) if q.shape == (len(names),) else None
            if saved is not None:
                checker.counts = saved
                return
            first = points[0][0]
            if now <= self._commands_until:
                for t in sorted(seen):
                    q = seen[t]
                    if self._stream_recorded < t < first and q.shape == (len(names),):
                        trace.commands.append(q)
                        self._stream_recorded = t

    def _on_command(self, msg: Float64MultiArray) -> None:
        self._on_positions(np.asarray(msg.data, dtype=np.float64))

    def _on_positions(self, q: np.ndarray) -> None:
        now = time.monotonic()
        with self._lock:
            self.last_command_time = now
            checker, trace = self.checker, self._trace
            if checker is None:
                return
            if trace is None:
                counts, checker.counts = checker.counts, self.idle
                checker.check(q)
                checker.counts = counts
                return
            checker.check(q)
            if now <= self._commands_until and q.shape == (len(checker.limits.names),):
                trace.commands.append(q)

    def _on_contacts(self, msg: String) -> None:
        try:
            payload = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        with self._lock:
            if self._trace is None or payload.get("episode") != self._episode:
                return
            if not math.isfinite(self._commands_until):
                payload["received"] = time.monotonic()
                self._trace.reports.append(payload)
                reflexes = payload.get("reflexes", 0)
                reflexed = isinstance(reflexes, int) and reflexes > 0
                if payload.get("done") or (self.end_on_reflex and reflexed):
                    self.verdict.set()

    def _on_task(self, msg: String) -> None:
        try:
            spec = spec_from_json(msg.data)
        except ValueError:
            return
        with self._lock:
            trace = self._trace
            if (
                trace is not None
                and spec.seed == trace.seed
                and "obstacle_shifted_at" in getattr(spec, "extra", {})
            ):
                self._pending_task = spec

    def _on_diag(self, msg: DiagnosticArray) -> None:
        prefix = f"{self.controller}: "
        statuses: dict[str, Mapping[str, str]] = {}
        for st in msg.status:
            if st.name.startswith(prefix):
                statuses[st.name] = {kv.key: kv.value for kv in st.values}
                if st.name.endswith(": node"):
                    self.node_message = st.message
        sample = diag_sample(time.monotonic(), statuses)
        if sample is None:
            return
        with self._lock:
            self.last_diag = sample
            if self._trace is not None:
                self._trace.diags.append(sample)

    # ------------------------------------------------------------------ episodes
    def begin(self, trace: EpisodeTrace, episode: int, keepout: list[Sphere]) -> None:
        """Start recording `trace` for the simulator's episode number `episode`."""
        with self._lock:
            self._trace = trace
            self._episode = int(episode)
            self._commands_until = math.inf
            self._pending_task = None
            self.verdict.clear()
            if self.checker is not None:
                self.checker.new_episode()
                self.checker.set_keepout(keepout)

    def mark_end(self) -> float:
        """The verdict is in: later commands are checked but no longer part of the motion."""
        with self._lock:
            self._commands_until = time.monotonic()
            return self._commands_until

    def finish(self) -> EpisodeTrace:
        """Stop recording; the trace gets the check counts of its commands."""
        with self._lock:
            trace = self._trace
            if trace is None:
                raise EvalError("no episode is being recorded")
            if self.checker is not None:
                trace.check = asdict(self.checker.counts)
            self._trace = None
            self._episode = None
            return trace

    def take_task_update(self) -> Any:
        with self._lock:
            spec, self._pending_task = self._pending_task, None
            return spec

    def update_keepout(self, spheres: list[Sphere]) -> None:
        with self._lock:
            if self.checker is not None:
                self.checker.set_keepout(spheres)

    def wait_quiet(self, quiet: float, timeout: float) -> bool:
        """Wait until no command arrived for `quiet` s; False if that did not happen in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_command_time < quiet:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def wait_diag_after(self, t: float, timeout: float) -> DiagSample | None:
        deadline = time.monotonic() + timeout
        while True:
            d = self.last_diag
            if d is not None and d.t > t:
                return d
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    # ------------------------------------------------------------------ services
    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        key = (srv_type, name)
        client = self._service_clients.get(key)
        if client is None:
            client = self._service_clients[key] = self.create_client(srv_type, name)
        try:
            result = call_service(self, srv_type, name, request, timeout, client=client,
                                  require_reply=True)
        except ServiceUnavailableError:
            raise EvalError(f"service {name} is not available") from None
        except ServiceTimeoutError:
            raise EvalError(f"service {name} did not answer within {timeout:g} s") from None
        except ServiceCallError as exc:
            raise EvalError(str(exc)) from None
        return result

    def set_params(self, node: str, values: Mapping[str, Any]) -> None:
        """Set parameters through the node's real parameter service; EvalError if refused."""
        req = SetParameters.Request()
        req.parameters = [_parameter(k, v).to_parameter_msg() for k, v in values.items()]
        results = self.call(SetParameters, f"/{node}/set_parameters", req).results
        refused = [
            f"{k}: {r.reason}" for k, r in zip(values, results, strict=True) if not r.successful
        ]
        if refused:
            raise EvalError(f"/{node} refused parameters: " + "; ".join(refused))

    def enable(self, on: bool) -> str:
        return str(
            self.call(SetBool, f"/{self.controller}/enable", SetBool.Request(data=on)).message
        )

    def trigger_reset(self) -> str:
        """The controller's ~/reset (clears a latched e-stop once the arm is stopped)."""
        res = self.call(Trigger, f"/{self.controller}/reset", Trigger.Request())
        return f"{'ok' if res.success else 'refused'}: {res.message}"

    def lifecycle_state(self, timeout: float = 2.0) -> int:
        res = self.call(GetState, f"/{self.controller}/get_state", GetState.Request(), timeout)
        return int(res.current_state.id)

    def reset_sim(self) -> tuple[Any, int]:
        """Reset the simulator to its current seed; returns (task spec of whichever task sim_arm
        runs, episode number)."""
        res = self.call(Trigger, f"/{self.sim}/reset", Trigger.Request(), timeout=15.0)
        if not res.success:
            raise EvalError(f"/{self.sim}/reset failed: {res.message}")
        try:
            spec = spec_from_json(res.message)
        except ValueError as exc:
            raise EvalError(f"/{self.sim}/reset replied with no task: {exc}") from None
        episode = spec.extra.get("episode")
        if not isinstance(episode, int):
            raise EvalError("the simulator's reset reply carries no episode number")
        return spec, episode


def _parameter(name: str, value: Any) -> Parameter:
    """A Parameter whose type does not depend on luck: float lists (empty ones too, which rclpy
    would otherwise call byte arrays) are double arrays."""
    if isinstance(value, (list, tuple)) and all(isinstance(x, float) for x in value):
        return Parameter(name, Parameter.Type.DOUBLE_ARRAY, [float(x) for x in value])
    return Parameter(name, value=value)
