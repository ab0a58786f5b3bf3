"""The gripper's messages (ros/gripper_io.py) on a real lifecycle node over real DDS: the fingers
keep the arm's delay, whichever message type the gripper's controller takes."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from diffusion_controller.control.gripper import GripperPath, GripperSettings  # noqa: E402
from diffusion_controller.data.gripper import GripperConfig  # noqa: E402
from diffusion_controller.ros.conversions import stamp_to_sec  # noqa: E402
from diffusion_controller.ros.gripper_io import GripperIO  # noqa: E402

pytestmark = pytest.mark.ros
PERIOD = 0.01


@pytest.mark.parametrize("kind", ["float64_multi_array", "joint_trajectory"])
def test_gripper_messages_keep_the_arms_delay(kind: str) -> None:
    ctx = rclpy.Context()  # its own context: other tests in this process may hold the default
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    try:
        node = LifecycleNode("gripper_io_test", context=ctx)
        executor.add_node(node)
        settings = GripperSettings("gripper_test/commands", kind, 0.0, 0.08, 10.0)
        path = GripperPath(GripperConfig(), arm=7, settings=settings, period=PERIOD)
        asked: list[float] = []

        def command(stamp: float) -> np.ndarray:
            asked.append(stamp)
            return np.array([0.01, 0.01])

        values = {"gripper_command_topic": settings.command_topic}
        io = GripperIO(node, path, command, values, PERIOD)
        got: list = []
        msg_type = JointTrajectory if kind == "joint_trajectory" else Float64MultiArray
        node.create_subscription(msg_type, settings.command_topic, got.append, 10)
        node.trigger_configure()
        node.trigger_activate()
        end = time.monotonic() + 30.0
        while not got and time.monotonic() < end:  # until discovery has matched the two ends
            io.publish(100.0, 0.1)
            executor.spin_once(timeout_sec=0.05)
        assert got, "no gripper message arrived"
        msg = got[-1]
        if kind == "joint_trajectory":
            # the point is due when the arm reaches the command: `arm_delay` and one message
            assert asked[-1] == pytest.approx(100.0)
            assert stamp_to_sec(msg.header.stamp) == pytest.approx(100.0)
            due = msg.points[0].time_from_start
            assert due.sec + 1e-9 * due.nanosec == pytest.approx(0.1 + PERIOD)
            assert list(msg.points[0].positions) == [0.01, 0.01]
        else:
            # applied on arrival: the command of `arm_delay` ago, where the arm is now
            assert asked[-1] == pytest.approx(100.0 - 0.1)
            assert list(msg.data) == [0.01, 0.01]
        io.publish(100.0, 0.0)  # the position interface: the arm takes its command at once
        assert asked[-1] == pytest.approx(100.0)
        executor.remove_node(node)
        node.destroy_node()
    finally:
        executor.shutdown()
        rclpy.shutdown(context=ctx)
