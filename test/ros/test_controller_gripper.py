"""The controller node with a gripper model, as its own process over real DDS: gripper commands
in step with the arm, inside the width limits and the speed limit, held on an e-stop; a joint
state without the finger joints is rejected (the arm holds, the reason is on /diagnostics); the
JointTrajectory gripper output on the streamed trajectory interface."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402


def _ros_conftest() -> Any:
    """This directory's conftest (the probe), as pytest loaded it: test/conftest.py is a
    `conftest` module too, so a plain import could find the other one."""
    import sys

    path = Path(__file__).with_name("conftest.py").resolve()
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == path:
            return module
    raise RuntimeError(f"{path} is not loaded (run this file with pytest)")


_conftest = _ros_conftest()
HOME, JOINTS, Probe = _conftest.HOME, _conftest.JOINTS, _conftest.Probe

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
LIMITS = [0.01, 0.07]
SPEED = 0.05  # m/s
PERIOD = 0.01  # the control period (100 Hz)
TRAJ_TOPIC = "/gripper_trajectory_controller/joint_trajectory"


@pytest.fixture(scope="module")
def gripper_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random small policy whose actions are the 7 arm joints near HOME, then the width,
    trained range 0..0.04 m: it asks the gripper to close from the measured 0.08 m."""
    torch = pytest.importorskip("torch", reason="torch is needed to create the test model")
    from diffusion_controller.data.gripper import GripperConfig
    from diffusion_controller.policy.artifact import save_artifact
    from diffusion_controller.policy.config import EncoderConfig, PolicyConfig, UNetConfig
    from diffusion_controller.policy.model import build_net
    from diffusion_controller.policy.normalize import Normalizer

    cfg = PolicyConfig.cpu_default(
        JOINTS, image_size=(32, 32), horizon=16, action_dt=0.1, gripper=GripperConfig(),
        encoder=EncoderConfig(variant="small", width=8, group_size=8, num_keypoints=8,
                              feature_dim=16),
        unet=UNetConfig(down_dims=[32, 64], kernel_size=3, n_groups=8, step_embed_dim=32))
    torch.manual_seed(0)
    lo, hi = np.r_[HOME - 0.25, 0.0], np.r_[HOME + 0.25, 0.04]
    norms = {k: Normalizer(lo, hi) for k in ("joints", "actions")}
    out = tmp_path_factory.mktemp("gripper_model")
    save_artifact(out, build_net(cfg), cfg, norms, card="random gripper model for ROS tests")
    return str(out)


class GripperProbe(Probe):
    """The probe's arm and camera, plus a hand whose fingers follow the gripper commands."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.fingers = True  # publish the finger joints in /joint_states
        self.half = 0.04  # each finger's position: the hand starts open (0.08 m)
        self.widths: list[float] = []  # commanded widths, in arrival order
        self.traj: list[JointTrajectory] = []
        self.create_subscription(Float64MultiArray, "/gripper_controller/commands",
                                 self._on_gripper, 1000)
        self.create_subscription(JointTrajectory, TRAJ_TOPIC, self._on_gripper_traj, 1000)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        data = list(msg.data)
        assert len(data) == 2 and data[0] == data[1], data  # [w/2, w/2]
        with self._lock:
            self.widths.append(2 * data[0])
            self.half = data[0]

    def _on_gripper_traj(self, msg: JointTrajectory) -> None:
        with self._lock:
            self.traj.append(msg)
            self.widths.append(float(sum(msg.points[0].positions)))
            self.half = float(msg.points[0].positions[0])

    def _tick_joints(self) -> None:
        msg = JointState()
        msg.header.stamp = self._stamp()
        with self._lock:
            q, v, half = self.q.copy(), self.v.copy(), self.half
        msg.name = list(JOINTS) + (FINGERS if self.fingers else [])
        msg.position = [float(x) for x in q] + ([half, half] if self.fingers else [])
        msg.velocity = [float(x) for x in v] + ([0.0, 0.0] if self.fingers else [])
        self.js_pub.publish(msg)

    def width_log(self) -> list[float]:
        with self._lock:
            return list(self.widths)


@pytest.fixture
def gprobe() -> Iterator[GripperProbe]:
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = GripperProbe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=2.0)
    thread.join(timeout=2.0)
    node.destroy_node()
    rclpy.shutdown(context=context)


def _check_limits(widths: list[float], reach: float) -> None:
    w = np.asarray(widths)
    assert np.all(np.isfinite(w))
    assert np.all(w >= LIMITS[0] - 1e-12) and np.all(w <= LIMITS[1] + 1e-12), (w.min(), w.max())
    assert np.max(np.abs(np.diff(w))) <= reach + 1e-9, np.max(np.abs(np.diff(w)))


def test_gripper_commands_follow_the_model_within_limits_and_hold_on_estop(
    start_controller, gripper_model, gprobe: GripperProbe
) -> None:
    ctrl = start_controller(model_path=gripper_model, gripper_width_limits=LIMITS,
                            gripper_max_speed=SPEED)
    try:
        gprobe.wait_for(lambda: len(gprobe.width_log()) > 100, 60.0, "gripper commands")
        widths = gprobe.width_log()
        # The first command is the measured 0.08 m clamped into the limits; then the policy
        # (which asks for at most 0.04 m) closes it at no more than SPEED.
        assert widths[0] == pytest.approx(LIMITS[1], abs=SPEED * PERIOD + 1e-9)
        gprobe.wait_for(lambda: gprobe.width_log()[-1] < LIMITS[1] - 0.01, 30.0,
                        "the gripper to close by 1 cm")
        # in step with the arm: one gripper command per arm command (both 100 Hz here)
        n_arm, n_grip = len(gprobe.command_log()), len(gprobe.width_log())
        assert abs(n_arm - n_grip) <= max(20, 0.2 * n_arm), (n_arm, n_grip)
        assert "gripper: ['panda_finger_joint1', 'panda_finger_joint2']" in ctrl.log()
        gprobe.wait_for(lambda: "commanded" in (gprobe.diag_message("gripper") or ""), 10.0,
                        "the gripper on /diagnostics")
        assert int(gprobe.diag_value("gripper", "published") or 0) > 0

        # E-stop: the arm brakes and holds; the gripper keeps publishing its last command.
        assert gprobe.trigger("estop").success
        time.sleep(0.5)
        n0 = len(gprobe.width_log())
        gprobe.wait_for(lambda: len(gprobe.width_log()) > n0 + 20, 30.0,
                        "gripper commands while the arm holds")
        held = gprobe.width_log()[n0:]
        assert max(held) == min(held), (min(held), max(held))
        _check_limits(gprobe.width_log(), SPEED * PERIOD)
        w = np.asarray(gprobe.width_log())
        print(f"\ngripper: {len(w)} commands, first {w[0]:.4f} m, min {w.min():.4f} m, largest "
              f"step {np.max(np.abs(np.diff(w))) * 1e3:.3f} mm (limit {SPEED * PERIOD * 1e3} mm), "
              f"held at {held[0]:.4f} m over {len(held)} commands on e-stop")
    finally:
        ctrl.stop()


def test_missing_fingers_hold_then_trajectory_gripper_output(
    start_controller, gripper_model, gprobe: GripperProbe
) -> None:
    gprobe.fingers = False  # /joint_states without the finger joints
    ctrl = start_controller(model_path=gripper_model, gripper_width_limits=LIMITS,
                            gripper_max_speed=SPEED, command_interface="trajectory",
                            trajectory_rate_hz=50.0, gripper_command_type="joint_trajectory",
                            gripper_command_topic=TRAJ_TOPIC)
    try:
        gprobe.wait_for(
            lambda: "lacks joints ['panda_finger_joint1', 'panda_finger_joint2']"
            in (gprobe.diag_value("inputs", "last_rejection") or ""), 60.0,
            "the missing finger joints on /diagnostics")
        time.sleep(1.0)
        assert gprobe.command_log() == [] and gprobe.width_log() == []  # the arm never starts
        assert "no joint_states" in (gprobe.diag_message("control loop") or "")
        gprobe.fingers = True  # the fingers appear: the arm starts, the gripper with it
        gprobe.wait_for(lambda: len(gprobe.width_log()) > 50, 30.0, "gripper trajectories")
        msg = gprobe.traj[-1]
        assert list(msg.joint_names) == FINGERS and len(msg.points) == 1
        stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in gprobe.traj]
        assert np.all(np.diff(stamps) > 0)
        # one message per streamed arm trajectory (every 2nd tick at 50 Hz): 2 periods' reach
        _check_limits(gprobe.width_log(), SPEED * 2 * PERIOD)
    finally:
        ctrl.stop()


def test_an_arm_only_model_has_no_gripper_output(start_controller, tiny_model,
                                                 gprobe: GripperProbe) -> None:
    ctrl = start_controller(model_path=tiny_model)
    try:
        gprobe.wait_for(lambda: len(gprobe.command_log()) > 50, 60.0, "arm commands")
        gprobe.wait_for(lambda: gprobe.diag_message("control loop") is not None, 10.0,
                        "diagnostics")
        assert gprobe.get_publishers_info_by_topic("/gripper_controller/commands") == []
        assert gprobe.width_log() == [] and gprobe.diag_message("gripper") is None
        assert "gripper:" not in ctrl.log()
    finally:
        ctrl.stop()
