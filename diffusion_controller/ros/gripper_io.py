"""The node's gripper adapter: publishes the commands of the core's control/gripper.GripperPath.

A model without a gripper gets no GripperIO at all: no publisher, no extra joints, the node exactly
as before. With one, the core (runtime/controller.py) reads the finger joints, splits and joins the
chunks and computes each command (`Controller.gripper_command`); this module only turns that
command into a message, sent by ros/command_output.py right after each arm message, and reports
the gripper on /diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from diffusion_controller.control.gripper import GripperPath
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.ros.command_output import COMMAND_DEPTH
from diffusion_controller.ros.conversions import sec_to_duration, sec_to_stamp


def gripper_output(node: Any, core: Any, values: Mapping[str, Any]) -> GripperIO | None:
    """The gripper's publisher for a configured core (runtime.controller.Controller) whose model
    has a gripper, logged once; None for an arm-only model."""
    if core.gripper is None:
        return None
    io = GripperIO(node, core.gripper, core.gripper_command, values,
                   core.stream_every / core.loop.rate_hz)  # one message per arm message
    node.get_logger().info(io.describe())
    return io


class GripperIO:
    """One model's gripper on one node: its command publisher and /diagnostics entry.

    `command(stamp)` is the core's gripper command for the arm message stamped `stamp` (None
    while there is nothing to send yet); `period` the time between two arm messages."""

    def __init__(self, node: Any, path: GripperPath,
                 command: Callable[[float], np.ndarray | None], values: Mapping[str, Any],
                 period: float) -> None:
        self.path = path
        self.settings = path.settings
        self._command = command
        self.period = float(period)
        if self.settings.command_type == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectory

            self.publisher = node.create_lifecycle_publisher(
                JointTrajectory, self.settings.command_topic, COMMAND_DEPTH)
        else:
            from std_msgs.msg import Float64MultiArray

            self.publisher = node.create_lifecycle_publisher(
                Float64MultiArray, self.settings.command_topic, COMMAND_DEPTH)
        self.published = 0

    def publish(self, stamp: float, arm_delay: float) -> None:
        """Loop thread, with each published arm message: the gripper's, if it has one yet.

        `arm_delay` is how long after its stamp the arm reaches the newest command: 0 for the
        position interface, `trajectory_lead` for the streamed trajectory. The fingers must keep
        the same delay, or they close that much before the hand is down (at 0.1 s, about a
        centimetre above a cube on pick_place's descent): a trajectory gripper gets its point
        due `arm_delay` later, a forward one (applied on arrival) the command of `arm_delay` ago.
        """
        delay = float(arm_delay)
        trajectory = self.settings.command_type == "joint_trajectory"
        positions = self._command(stamp if trajectory else stamp - delay)
        if positions is None:
            return
        if trajectory:
            from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

            msg = JointTrajectory()
            msg.header.stamp = sec_to_stamp(stamp)
            msg.joint_names = self.path.joints
            pt = JointTrajectoryPoint()
            pt.positions = [float(x) for x in positions]
            pt.time_from_start = sec_to_duration(delay + self.period)
            msg.points = [pt]
        else:
            from std_msgs.msg import Float64MultiArray

            msg = Float64MultiArray()
            msg.data = [float(x) for x in positions]
        self.publisher.publish(msg)
        self.published += 1

    def describe(self) -> str:
        """One log line: what the gripper reads and where it sends what."""
        s, g = self.settings, self.path.gripper
        return (f"gripper: {g.joints} as {g.dim_names}, commands on {s.command_topic} "
                f"({s.command_type}), width [{s.width_min:g}, {s.width_max:g}] m, "
                f"{s.max_speed:g} m/s; holds its last command when the arm stops")

    def diagnostic(self, prefix: str) -> diag.StatusEntry:
        """The gripper on /diagnostics: commanded and measured dims, and what it did."""
        c = self.path.commander
        cmd, meas = c.commanded, c.measured
        if meas is None:
            level, text = diag.WARN, f"no finger joint states yet ({', '.join(self.path.joints)})"
        elif cmd is None:
            level, text = diag.OK, "not commanded yet"
        else:
            level, text = diag.OK, f"commanded {', '.join(f'{x:.4f}' for x in cmd)} m"
        values = [("dims", self.path.gripper.dim_names), ("topic", self.settings.command_topic),
                  ("commanded_m", [] if cmd is None else [float(x) for x in cmd]),
                  ("measured_m", [] if meas is None else [float(x) for x in meas]),
                  ("published", self.published), ("held_ticks", c.held_ticks),
                  ("speed_limited_ticks", c.limited_ticks)]
        return diag.StatusEntry(f"{prefix}: gripper", level, text, diag.kv(values))
