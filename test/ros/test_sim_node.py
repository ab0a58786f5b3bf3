"""The `sim_arm` executable over real DDS: rates, image format, latched URDF and task, commands in
the configured joint order, malformed commands, reset, and a clean exit on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from node_helpers import sim_arm_command, wait_for  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import (  # noqa: E402
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from diffusion_controller.service_client import call_service  # noqa: E402
from diffusion_controller.sim.task import TaskSpec, sample_task  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ARM = [f"panda_joint{i}" for i in range(1, 8)]
# Commands arrive in this order (a permutation), to prove the node reorders them.
ORDER = ["panda_joint3", "panda_joint1", "panda_joint2", "panda_joint7", "panda_joint4",
         "panda_joint6", "panda_joint5"]  # fmt: skip
SEED = 5




class Listener(Node):
    def __init__(self, context: Any) -> None:
        super().__init__("sim_probe", context=context)
        self.lock = threading.Lock()
        self.joint_msgs: list[tuple[float, JointState]] = []
        self.images: list[Image] = []
        self.contacts: list[dict] = []
        self.task: list[str] = []
        self.urdf: list[str] = []
        self.create_subscription(JointState, "/joint_states", self._on_js, qos_profile_sensor_data)
        self.create_subscription(Image, "/camera/image_raw", self._on_img, qos_profile_sensor_data)
        self.create_subscription(String, "/sim/contacts", self._on_contacts, 10)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.create_subscription(String, "/sim/task", self._on_task, latched)
        self.latched = latched
        self.cmd_pub = self.create_publisher(
            Float64MultiArray, "/forward_position_controller/commands", 10
        )

    def _on_js(self, msg: JointState) -> None:
        with self.lock:
            self.joint_msgs.append((time.monotonic(), msg))

    def _on_img(self, msg: Image) -> None:
        with self.lock:
            self.images.append(msg)

    def _on_contacts(self, msg: String) -> None:
        with self.lock:
            self.contacts.append(json.loads(msg.data))

    def _on_task(self, msg: String) -> None:
        with self.lock:
            self.task.append(msg.data)

    def subscribe_urdf(self) -> None:
        """Subscribed late on purpose: transient local must still deliver the URDF."""
        self.create_subscription(
            String, "/robot_description", lambda m: self.urdf.append(m.data), self.latched
        )

    def latest_arm(self) -> np.ndarray:
        with self.lock:
            msg = self.joint_msgs[-1][1]
        pos = dict(zip(msg.name, msg.position, strict=True))
        return np.array([pos[n] for n in ARM])

    def command(self, q_arm: np.ndarray) -> None:
        by_name = dict(zip(ARM, q_arm, strict=True))
        self.cmd_pub.publish(Float64MultiArray(data=[float(by_name[n]) for n in ORDER]))




@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, Path]]:
    tmp = tmp_path_factory.mktemp("sim_node")
    params = tmp / "sim.yaml"
    values = {"seed": SEED, "joint_names": ORDER, "image_width": 64, "image_height": 48}
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}), encoding="utf-8")
    log = tmp / "sim_arm.log"
    fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*sim_arm_command(), "--ros-args", "--params-file", str(params)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    yield proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    fh.close()


@pytest.fixture(scope="module")
def listener(sim: tuple[subprocess.Popen, Path]) -> Iterator[Listener]:
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = Listener(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    _, log = sim
    try:
        wait_for(lambda: len(node.joint_msgs) > 50, 20.0, "joint states from sim_arm")
    except AssertionError:
        raise AssertionError(f"sim_arm did not come up:\n{log.read_text()}") from None
    yield node
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.shutdown(context=context)
    thread.join(timeout=2.0)


def test_joint_states_at_100_hz_with_all_joints(listener: Listener) -> None:
    with listener.lock:
        listener.joint_msgs.clear()
    time.sleep(2.0)
    with listener.lock:
        msgs = list(listener.joint_msgs)
    stamps = np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for _, m in msgs])
    arrivals = np.array([t for t, _ in msgs])
    # Behaviour, not rate (rates belong in `bench`: a loaded host publishes late, not wrongly):
    # a stream of states with strictly increasing stamps that arrive in stamp order.
    assert len(msgs) > 10
    assert np.all(np.diff(stamps) > 0)
    assert np.all(np.diff(arrivals) >= 0)
    # Stamped on the ROS clock (wall time here): close to now.
    assert abs(stamps[-1] - time.time()) < 1.0
    msg = msgs[-1][1]
    assert set(msg.name) == {*ARM, "panda_finger_joint1", "panda_finger_joint2"}
    assert len(msg.position) == len(msg.velocity) == len(msg.name) == 9
    np.testing.assert_allclose(listener.latest_arm(), sample_task(SEED).start_q, atol=5e-3)


def test_camera_images_are_rgb8_at_the_configured_size(listener: Listener) -> None:
    with listener.lock:
        listener.images.clear()
    wait_for(lambda: len(listener.images) >= 10, 10.0, "10 camera images")
    img = listener.images[-1]
    assert img.encoding == "rgb8" and (img.height, img.width) == (48, 64)
    assert img.step == 64 * 3 and len(img.data) == 48 * 64 * 3
    assert img.header.frame_id == "camera_optical_frame"
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(48, 64, 3).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() >= 3  # the obstacle is in view


def test_latched_robot_description_and_task(listener: Listener) -> None:
    listener.subscribe_urdf()
    wait_for(lambda: bool(listener.urdf), 5.0, "/robot_description (transient local)")
    assert '<robot name="panda"' in listener.urdf[0] and "panda_joint7" in listener.urdf[0]
    wait_for(lambda: bool(listener.task), 5.0, "/sim/task")
    spec = TaskSpec.from_json(listener.task[-1])
    assert spec.seed == SEED and spec.to_json() == sample_task(SEED).to_json()


def test_command_moves_the_arm_and_bad_commands_are_dropped(listener: Listener) -> None:
    start = listener.latest_arm()
    goal = start.copy()
    goal[0] += 0.25  # joint 1 only: must arrive at joint 1 despite the permuted order
    goal[6] -= 0.2
    for k in range(1, 51):  # a 0.5 s ramp at 100 Hz
        listener.command(start + (goal - start) * k / 50)
        time.sleep(0.01)
    wait_for(
        lambda: np.abs(listener.latest_arm() - goal).max() < 0.01, 5.0, "the arm to reach the goal"
    )
    time.sleep(0.3)  # settled, and it stays there
    np.testing.assert_allclose(listener.latest_arm(), goal, atol=0.005)
    # Malformed commands: wrong length and NaN are dropped, the arm stays.
    listener.cmd_pub.publish(Float64MultiArray(data=[0.0] * 6))
    listener.cmd_pub.publish(Float64MultiArray(data=[float("nan")] * 7))
    wait_for(
        lambda: bool(listener.contacts) and listener.contacts[-1]["rejected_commands"] >= 2,
        3.0,
        "the rejected commands to be reported",
    )
    np.testing.assert_allclose(listener.latest_arm(), goal, atol=0.01)
    report = listener.contacts[-1]
    assert report["collision_events"] == 0 and report["min_clearance"] > 0.0
    assert report["seed"] == SEED and len(report["tool"]) == 3


def test_reset_service_returns_to_the_start(listener: Listener) -> None:
    reply = call_service(listener, Trigger, "/sim_arm/reset", Trigger.Request(), 5.0)
    assert reply.success and TaskSpec.from_json(reply.message).seed == SEED
    wait_for(
        lambda: np.abs(listener.latest_arm() - sample_task(SEED).start_q).max() < 1e-3,
        3.0,
        "the arm back at the start pose",
    )


def test_sigint_shuts_down_cleanly(sim: tuple[subprocess.Popen, Path], listener: Listener) -> None:
    proc, log = sim
    assert proc.poll() is None, log.read_text()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text
    assert "ticks" in text  # the shutdown summary
