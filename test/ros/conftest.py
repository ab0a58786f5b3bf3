"""Shared fixtures for the ROS tests: a tiny model, parameter files, the controller as a
subprocess, and a probe node that plays the arm and the camera over real DDS.

The probe's arm is a perfect position tracker (the measured position is the last command, the
velocity its finite difference), which is all the controller's checks need; it publishes
/joint_states at 100 Hz with extra and shuffled joints, and a bgr8 camera at 15 Hz.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffusion_controller.node_process import (
    CONTROLLER_MODULE,
    NodeProcess,
    child_env,
    write_params_file,
)

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter, parameter_value_to_python  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from diffusion_controller.service_client import call_service  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
STREAM_LEAD = 0.05  # the node's default trajectory_lead
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
NODE = "diffusion_controller"


def panda_urdf() -> str:
    """The Panda URDF path; skips the test when pybullet_data or the file is missing."""
    from diffusion_controller.control.panda import panda_urdf_path

    try:
        return panda_urdf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def urdf_path() -> str:
    return panda_urdf()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Any) -> str:
    """A randomly initialised small policy (32x32 images, horizon 16), actions near HOME."""
    out = tiny_artifact(tmp_path_factory.mktemp("tiny_model"), HOME, 0.25,
                        "tiny random model for ROS tests")
    return str(out)


def write_params(path: Path, **values: Any) -> Path:
    """A controller parameter file with test defaults, overridden by `values`."""
    base: dict[str, Any] = {
        "backend": "torch",
        "inference_threads": 1,
        "warmup_runs": 1,
        "urdf_path": panda_urdf(),
        "inference_rate_hz": 10.0,
        "ddim_steps": 4,
        "velocity_scale": 0.5,
        "acceleration_scale": 0.5,
        "jerk_scale": 0.5,
        "table_z": -0.3,
        "joint_state_timeout": 0.15,
        "image_timeout": 0.6,
        "chunk_timeout": 1.0,
        "tracking_error_limit": 0.5,
        "diagnostics_rate": 2.0,
    }
    base.update(values)
    return write_params_file(path, base)


@pytest.fixture
def start_controller(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Starts the `controller` executable (its own ROS process, real DDS) with test parameters;
    every one started is stopped at teardown."""
    procs: list[NodeProcess] = []

    def start(**values: Any) -> NodeProcess:
        # The environment is read now, not at fixture setup, so that what later fixtures put in it
        # (the fault-hook file) reaches the node; one math thread even if the shell sets more.
        env = {**child_env(), "OMP_NUM_THREADS": "1"}
        params_file = write_params(tmp_path / f"params{len(procs)}.yaml", **values)
        proc = NodeProcess(CONTROLLER_MODULE, ["--params-file", str(params_file)],
                           tmp_path / f"controller{len(procs)}.log", env, cwd=ROOT)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()


@dataclass
class Received:
    t: float  # time.monotonic() at reception
    q: np.ndarray
    v: np.ndarray | None = None  # commanded velocities (trajectory interface only)
    stamp: float | None = None  # header stamp, node clock (trajectory interface only)


class Probe(Node):
    """Plays the arm and the camera, records commands, calls the controller's services."""

    def __init__(self, context: Any, play_arm: bool = True,
                 command_topic: str = "/forward_position_controller/commands",
                 trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory") -> None:
        super().__init__("probe", context=context)
        self.q = HOME.copy()
        self.v = np.zeros(7)
        self.publish_joints = play_arm
        self.publish_images = play_arm
        self.measured: list[Received] = []  # /joint_states from someone else (play_arm False)
        self.commands: list[Received] = []
        self.chunks: list[float] = []
        self.diagnostics: list[DiagnosticArray] = []
        self._lock = threading.Lock()
        self._frame = 0
        self.js_pub = self.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.img_pub = self.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.create_subscription(Float64MultiArray, command_topic, self._on_position, 100)
        self.create_subscription(JointTrajectory, trajectory_topic, self._on_trajectory, 100)
        self.create_subscription(JointTrajectory, f"/{NODE}/chunk", self._on_chunk, 10)
        self.markers = 0
        self.create_subscription(MarkerArray, f"/{NODE}/chunk_markers", self._on_markers, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        if not play_arm:
            self.create_subscription(JointState, "/joint_states", self._on_joint_state,
                                     qos_profile_sensor_data)
        self.create_timer(0.01, self._tick_joints)
        self.create_timer(1 / 15, self._tick_image)

    # arm and camera
    def _stamp(self) -> Any:
        return self.get_clock().now().to_msg()

    def _tick_joints(self) -> None:
        if not self.publish_joints:
            return
        msg = JointState()
        msg.header.stamp = self._stamp()
        with self._lock:
            q, v = self.q.copy(), self.v.copy()
        # Shuffled order plus the fingers: the controller must match by name.
        order = [6, 0, 5, 1, 4, 2, 3]
        msg.name = ["panda_finger_joint1"] + [JOINTS[i] for i in order] + ["panda_finger_joint2"]
        msg.position = [0.04] + [float(q[i]) for i in order] + [0.04]
        msg.velocity = [0.0] + [float(v[i]) for i in order] + [0.0]
        self.js_pub.publish(msg)

    def publish_bad_joint_state(self, kind: str) -> None:
        """One malformed /joint_states message: "nan", "future", "old", "missing" or "short"."""
        msg = JointState()
        now = self.get_clock().now()
        stamp = now.nanoseconds * 1e-9
        with self._lock:
            q = self.q.copy()
        names, pos = list(JOINTS), [float(x) for x in q]
        if kind == "nan":
            pos[3] = float("nan")
        elif kind == "future":
            stamp += 5.0
        elif kind == "old":
            stamp -= 5.0
        elif kind == "missing":
            names, pos = names[:6], pos[:6]
        elif kind == "short":
            pos = pos[:5]
        msg.header.stamp.sec = int(stamp)
        msg.header.stamp.nanosec = int((stamp % 1.0) * 1e9)
        msg.name, msg.position = names, pos
        self.js_pub.publish(msg)

    def _tick_image(self) -> None:
        if not self.publish_images:
            return
        h, w = 60, 80
        img = np.full((h, w, 3), 40, np.uint8)
        x = (self._frame * 3) % (w - 10)
        img[20:30, x:x + 10] = (0, 0, 255)  # a red square in bgr8
        self._frame += 1
        msg = Image()
        msg.header.stamp = self._stamp()
        msg.header.frame_id = "camera"
        msg.height, msg.width, msg.encoding, msg.step = h, w, "bgr8", w * 3
        msg.data = img.tobytes()
        self.img_pub.publish(msg)

    def _track(self, q: np.ndarray, v: np.ndarray | None = None,
               stamp: float | None = None) -> None:
        t = time.monotonic()
        with self._lock:
            if self.commands:
                dt = max(t - self.commands[-1].t, 1e-3)
                self.v = (q - self.q) / max(dt, 0.01)
            self.q = q.copy()
            self.commands.append(Received(t, q, v, stamp))

    def _on_position(self, msg: Float64MultiArray) -> None:
        self._track(np.array(msg.data, dtype=float))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """The command the stream has just sent (control/stream.py): after the commands the
        stream repeats, it is due about `trajectory_lead` plus a period after it is sent, up to
        `bridge_hold` periods later in a run that started at rest; the plan's points (the
        certified stop from it) follow. The last point due by then: the newest command or a
        point of its certified stop."""
        idx = [list(msg.joint_names).index(n) for n in JOINTS]
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        due = time.time() + 2 * STREAM_LEAD + 0.015
        times = [stamp + p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec
                 for p in msg.points]
        point = msg.points[max([i for i, t in enumerate(times) if t <= due], default=0)]
        self._track(np.array(point.positions, dtype=float)[idx],
                    np.array(point.velocities, dtype=float)[idx],
                    msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)

    def _on_joint_state(self, msg: JointState) -> None:
        names = list(msg.name)
        q = np.array([msg.position[names.index(n)] for n in JOINTS])
        with self._lock:
            self.measured.append(Received(time.monotonic(), q))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        with self._lock:
            self.chunks.append(time.monotonic())

    def _on_markers(self, msg: MarkerArray) -> None:
        if msg.markers and msg.markers[0].points:
            with self._lock:
                self.markers += 1

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self.diagnostics.append(msg)

    # recorded data
    def command_log(self) -> list[Received]:
        with self._lock:
            return list(self.commands)

    def chunk_times(self) -> list[float]:
        with self._lock:
            return list(self.chunks)

    def diag_value(self, suffix: str, key: str) -> str | None:
        with self._lock:
            msgs = list(self.diagnostics)
        for msg in reversed(msgs):
            for st in msg.status:
                if st.name.endswith(suffix):
                    for kv in st.values:
                        if kv.key == key:
                            return kv.value
        return None

    def diag_message(self, suffix: str) -> str | None:
        with self._lock:
            msgs = list(self.diagnostics)
        for msg in reversed(msgs):
            for st in msg.status:
                if st.name.endswith(suffix):
                    return st.message
        return None

    # services
    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        return call_service(self, srv_type, name, request, timeout)

    def lifecycle_state(self) -> int:
        return self.call(GetState, f"/{NODE}/get_state", GetState.Request()).current_state.id

    def transition(self, transition_id: int, timeout: float = 30.0) -> bool:
        req = ChangeState.Request()
        req.transition = Transition(id=transition_id)
        return bool(self.call(ChangeState, f"/{NODE}/change_state", req, timeout).success)

    def set_params(self, **values: Any) -> list[Any]:
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return list(self.call(SetParameters, f"/{NODE}/set_parameters", req).results)

    def get_param(self, name: str) -> Any:
        req = GetParameters.Request()
        req.names = [name]
        value = self.call(GetParameters, f"/{NODE}/get_parameters", req).values[0]
        return parameter_value_to_python(value)

    def trigger(self, name: str) -> Any:
        return self.call(Trigger, f"/{NODE}/{name}", Trigger.Request())

    def enable(self, on: bool) -> Any:
        return self.call(SetBool, f"/{NODE}/enable", SetBool.Request(data=on))

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)


@pytest.fixture
def probe() -> Iterator[Probe]:
    yield from _probe(play_arm=True)


@pytest.fixture
def listener() -> Iterator[Probe]:
    """A probe that only listens (commands, /joint_states, diagnostics) and calls services."""
    yield from _probe(play_arm=False)


def _probe(play_arm: bool) -> Iterator[Probe]:
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = Probe(context, play_arm=play_arm)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=2.0)
    thread.join(timeout=2.0)
    node.destroy_node()
    rclpy.shutdown(context=context)

