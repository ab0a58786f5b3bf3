"""`sim_arm` with `task:=pick_place` over real DDS: the task JSON it latches, finger joint states
that follow /gripper_controller/commands at the hand's bounded speed, malformed gripper commands
dropped, and the verdict fields on /sim/contacts."""

from __future__ import annotations

import json
import os
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
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from diffusion_controller.sim.tasks import spec_from_json  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
FINGERS = ("panda_finger_joint1", "panda_finger_joint2")






class Probe(Node):
    def __init__(self, context: Any) -> None:
        super().__init__("pick_probe", context=context)
        self.lock = threading.Lock()
        self.fingers: list[tuple[float, np.ndarray]] = []
        self.contacts: list[dict] = []
        self.task: list[str] = []
        self.create_subscription(JointState, "/joint_states", self._on_js, qos_profile_sensor_data)
        self.create_subscription(String, "/sim/contacts", self._on_contacts, 10)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.create_subscription(String, "/sim/task", self._on_task, latched)
        self.gripper = self.create_publisher(Float64MultiArray, "/gripper_controller/commands", 10)

    def _on_js(self, msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position, strict=True))
        with self.lock:
            self.fingers.append((time.monotonic(), np.array([pos[n] for n in FINGERS])))

    def _on_contacts(self, msg: String) -> None:
        with self.lock:
            self.contacts.append(json.loads(msg.data))

    def _on_task(self, msg: String) -> None:
        with self.lock:
            self.task.append(msg.data)

    def latest_fingers(self) -> np.ndarray:
        with self.lock:
            return self.fingers[-1][1].copy()


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Probe, subprocess.Popen]]:
    tmp = tmp_path_factory.mktemp("sim_pick")
    params = tmp / "sim.yaml"
    values = {"seed": 3, "task": "pick_place", "image_width": 48, "image_height": 48}
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}), encoding="utf-8")
    log: Path = tmp / "sim_arm.log"
    fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*sim_arm_command(), "--ros-args", "--params-file", str(params)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(node.fingers) > 20 and node.task, 20.0, "sim_arm pick_place")
    except AssertionError:
        raise AssertionError(f"sim_arm did not come up:\n{log.read_text()}") from None
    yield node, proc
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.shutdown(context=context)
    thread.join(timeout=2.0)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    fh.close()


def test_task_json_is_pick_place_and_fingers_start_open(probe: tuple[Probe, Any]) -> None:
    node, _ = probe
    spec = spec_from_json(node.task[-1])
    assert spec.task == "pick_place" and spec.seed == 3
    np.testing.assert_allclose(node.latest_fingers(), spec.start_fingers, atol=2e-3)


def test_fingers_follow_the_gripper_command(probe: tuple[Probe, Any]) -> None:
    node, _ = probe
    node.gripper.publish(Float64MultiArray(data=[0.01, 0.01]))
    wait_for(lambda: np.all(np.abs(node.latest_fingers() - 0.01) < 2e-3), 5.0, "fingers at 1 cm")
    # Malformed commands (wrong length, NaN) are dropped: the fingers stay where they are.
    node.gripper.publish(Float64MultiArray(data=[0.03]))
    node.gripper.publish(Float64MultiArray(data=[float("nan"), 0.03]))
    time.sleep(0.5)
    np.testing.assert_allclose(node.latest_fingers(), 0.01, atol=2e-3)
    node.gripper.publish(Float64MultiArray(data=[0.04, 0.04]))
    wait_for(lambda: np.all(node.latest_fingers() > 0.038), 5.0, "fingers open again")


def test_contacts_report_the_verdict_fields(probe: tuple[Probe, Any]) -> None:
    node, _ = probe
    wait_for(lambda: any("label" in c for c in node.contacts), 5.0, "a contacts report")
    last = node.contacts[-1]
    assert last["label"] in ("", "missed_grasp")  # nothing picked yet
    assert len(last["cube"]) == 3 and last["collision_events"] == 0
