"""sim_arm's robot side through the real node over DDS: a 100 Hz staircase into `forward` is a
reflex (on ~/reflex, /diagnostics and /sim/contacts), the arm holds until ~/error_recovery; a
smooth JointTrajectory into `trajectory` moves the arm with no reflex."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from builtin_interfaces.msg import Duration  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from node_helpers import wait_for  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from diffusion_controller.sim.task import sample_task  # noqa: E402

ARM = [f"panda_joint{i}" for i in range(1, 8)]
SEED = 2
TRAJ_TOPIC = "/joint_trajectory_controller/joint_trajectory"


class Probe(Node):
    def __init__(self, context: Any) -> None:
        super().__init__("robot_side_probe", context=context)
        self.lock = threading.Lock()
        self.q: np.ndarray | None = None
        self.reflexes: list[dict] = []
        self.diag: list[DiagnosticStatus] = []
        self.contacts: list[dict] = []
        self.create_subscription(JointState, "/joint_states", self._on_js, qos_profile_sensor_data)
        self.create_subscription(String, "/sim_arm/reflex", self._on_reflex, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.create_subscription(
            String, "/sim/contacts", lambda m: self._add(self.contacts, json.loads(m.data)), 10
        )
        self.fwd = self.create_publisher(
            Float64MultiArray, "/forward_position_controller/commands", 10
        )
        self.traj = self.create_publisher(JointTrajectory, TRAJ_TOPIC, 10)
        self.recovery = self.create_client(Trigger, "/sim_arm/error_recovery")

    def _add(self, box: list, item: Any) -> None:
        with self.lock:
            box.append(item)

    def _on_js(self, msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position, strict=True))
        with self.lock:
            self.q = np.array([pos[n] for n in ARM])

    def _on_reflex(self, msg: String) -> None:
        self._add(self.reflexes, json.loads(msg.data))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "sim_arm: robot":
                self._add(self.diag, st)




def _start(tmp: Path, kind: str) -> tuple[subprocess.Popen, Path]:
    params = tmp / f"sim_{kind}.yaml"
    values = {"seed": SEED, "robot_controller": kind, "image_width": 32, "image_height": 32,
              "camera_rate_hz": 2.0, "cmd_timeout": 0.5}  # fmt: skip
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}), encoding="utf-8")
    log = tmp / f"sim_{kind}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffusion_controller.sim.sim_node", "--ros-args",
         "--params-file", str(params)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=open(log, "w", encoding="utf-8"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, log


@pytest.fixture()
def probe() -> Iterator[Probe]:
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.shutdown(context=context)
    thread.join(timeout=2.0)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_staircase_into_forward_is_a_reflex_until_recovery(tmp_path: Path, probe: Probe) -> None:
    proc, log = _start(tmp_path, "forward")
    try:
        wait_for(lambda: probe.q is not None, 30.0, f"joint states:\n{log.read_text()}")
        q0 = sample_task(SEED).start_q.copy()
        step = np.zeros(7)
        step[0] = 0.05 * 0.01  # 0.05 rad/s as one position per 10 ms
        for k in range(1, 50):
            probe.fwd.publish(Float64MultiArray(data=(q0 + k * step).tolist()))
            time.sleep(0.01)
            if probe.reflexes:
                break
        wait_for(lambda: bool(probe.reflexes), 5.0, "a reflex on /sim_arm/reflex")
        r = probe.reflexes[0]
        assert r["joint"] == "panda_joint1" and r["quantity"] in ("velocity", "acceleration")
        assert abs(r["value"]) >= r["limit"]
        wait_for(lambda: any(s.level == DiagnosticStatus.ERROR for s in probe.diag), 5.0,
                 "the reflex on /diagnostics")  # fmt: skip
        wait_for(lambda: any(c["reflexes"] >= 1 for c in probe.contacts), 5.0, "contacts count")
        # Held: further commands do not move the arm.
        with probe.lock:
            held = probe.q.copy()
        for _ in range(30):
            probe.fwd.publish(Float64MultiArray(data=(q0 + 0.05).tolist()))
            time.sleep(0.01)
        time.sleep(0.3)
        with probe.lock:
            assert np.max(np.abs(probe.q - held)) < 2e-3
        assert probe.recovery.wait_for_service(timeout_sec=5.0)
        res = probe.recovery.call_async(Trigger.Request())
        wait_for(res.done, 10.0, "~/error_recovery")
        assert res.result().success
        wait_for(lambda: probe.diag[-1].level == DiagnosticStatus.OK, 5.0, "OK after recovery")
    finally:
        _stop(proc)


def test_smooth_trajectory_moves_without_reflex(tmp_path: Path, probe: Probe) -> None:
    proc, log = _start(tmp_path, "trajectory")
    try:
        wait_for(lambda: probe.q is not None, 30.0, f"joint states:\n{log.read_text()}")
        wait_for(lambda: probe.traj.get_subscription_count() > 0, 10.0, "sim_arm subscribed")
        q0 = sample_task(SEED).start_q.copy()
        goal = q0.copy()
        goal[0] += 0.2
        msg = JointTrajectory(joint_names=ARM)
        msg.points = [JointTrajectoryPoint(
            positions=goal.tolist(), velocities=[0.0] * 7, accelerations=[0.0] * 7,
            time_from_start=Duration(sec=1, nanosec=0),
        )]  # fmt: skip
        probe.traj.publish(msg)
        wait_for(lambda: abs(probe.q[0] - goal[0]) < 0.01, 10.0, "the arm at the goal")
        time.sleep(0.5)
        assert probe.reflexes == []
        with probe.lock:
            assert all(c["reflexes"] == 0 for c in probe.contacts)
            assert any(c["robot_controller"] == "trajectory" for c in probe.contacts)
    finally:
        _stop(proc)


def test_a_namespace_moves_the_sim_topics(tmp_path: Path, probe: Probe) -> None:
    """Relative topic defaults: `__ns:=/arm2` puts the arm's topics under /arm2."""
    log = tmp_path / "sim_ns.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffusion_controller.sim.sim_node", "--ros-args",
         "-r", "__ns:=/arm2", "-p", "image_width:=16", "-p", "image_height:=16"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=open(log, "w", encoding="utf-8"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    want = {"/arm2/joint_states", "/arm2/camera/image_raw", "/arm2/robot_description",
            "/arm2/sim/contacts", "/arm2/forward_position_controller/commands"}  # fmt: skip
    try:
        wait_for(lambda: want <= {n for n, _ in probe.get_topic_names_and_types()}, 30.0,
                 f"the namespaced topics:\n{log.read_text()}")  # fmt: skip
    finally:
        _stop(proc)
