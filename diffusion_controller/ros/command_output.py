"""The controller's commands as messages: one Float64MultiArray per tick (`position`), or a
JointTrajectory every `stream_every`-th tick (`trajectory`) from control/stream.TrajectoryStream:
the recent commands on fixed times `trajectory_lead` late, the newest, and the filter's certified
continuation, so that each message replaces the last seamlessly on the arm's controller. A
gripper model's command (ros/gripper_io.py) goes out right after each arm message, in step with it.

Runs in the control loop thread (ControlLoop's output callback).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffusion_controller.control.stream import TrajectoryStream
from diffusion_controller.control.types import Command
from diffusion_controller.ros import conversions as conv

# Commands a reliable writer keeps for a subscriber that falls behind (1 s at 100 Hz): a recorder
# or monitor that is starved for a moment receives every command late rather than losing some
# (a ros2_control controller takes only the newest anyway). The gripper's publisher too.
COMMAND_DEPTH = 100


class CommandOutput:
    """Publishes each command the loop hands over, in the configured interface."""

    def __init__(self, publisher: Any, interface: str, joint_names: Sequence[str],
                 rate_hz: float, stream_every: int, lead: float, gripper: Any = None,
                 logger: Any = None) -> None:
        """`logger` (an rclpy logger, optional) is told when the stream restarts."""
        self._pub = publisher
        self._position = interface == "position"
        self._names = list(joint_names)
        self._every = int(stream_every)
        self._tick = self._every - 1  # the first command goes out at once
        self._logger = logger
        # trajectory interface: the stream the messages are cut from (None for position)
        self.stream = None if self._position else TrajectoryStream(
            1.0 / float(rate_hz), float(lead), self._every)
        self.gripper = gripper  # ros.gripper_io.GripperIO, or None for an arm-only model

    def __call__(self, cmd: Command) -> None:
        if self._position:
            self._pub.publish(conv.position_command_msg(cmd))
            if self.gripper is not None:
                self.gripper.publish(cmd.stamp, 0.0)
            return
        stream = self.stream
        restarts = stream.restarts
        stream.push(cmd)
        if stream.restarts != restarts and self._logger is not None:
            self._logger.warning(
                f"trajectory stream restarted ({stream.restarts} so far): commands "
                f"{stream.restart_lateness * 1e3:.0f} ms late (the loop stalled); the arm's "
                "controller re-plans from its own state", throttle_duration_sec=2.0)
        if cmd.plan is None:
            return  # a missed slot the arm spent on the last message: history only
        self._tick += 1
        if self._tick < self._every:
            return
        self._tick = 0
        points = stream.points()
        if not points:
            return  # a new run's bridge (control/stream.py)
        self._pub.publish(conv.trajectory_stream_msg(points, self._names))
        if self.gripper is not None:  # the arm reaches this command `lead` later
            self.gripper.publish(cmd.stamp, stream.lead)
