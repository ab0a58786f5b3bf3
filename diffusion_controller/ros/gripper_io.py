"""The node's gripper adapter: publishes the commands of a control/gripper.GripperPath.

A model without a gripper gets no GripperIO at all: no publisher, no extra joints, the node exactly
as before. With one, the node wires the GripperPath (`io.path`) into its joint-state callback,
chunk submission and warm start, and calls `publish` with every arm command it publishes.
"""

from __future__ import annotations

from typing import Any

from diffusion_controller.control.gripper import GripperPath, GripperSettings
from diffusion_controller.data.gripper import GripperConfig
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.ros.conversions import sec_to_duration, sec_to_stamp


class GripperIO:
    """One model's gripper on one node: its GripperPath and its command publisher."""

    def __init__(self, node: Any, gripper: GripperConfig, arm: int, values: dict[str, Any]) -> None:
        self.settings = GripperSettings.from_values(values)
        self.lead = float(values["trajectory_lead"])
        self.period = 1.0 / float(values["control_rate_hz"])
        if values["command_interface"] == "trajectory":
            every = max(1, round(float(values["control_rate_hz"])
                                 / float(values["trajectory_rate_hz"])))
            self.period *= every  # one gripper message per streamed arm trajectory
        self.path = GripperPath(gripper, arm, self.settings, self.period)
        if self.settings.command_type == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectory

            self.publisher = node.create_lifecycle_publisher(
                JointTrajectory, self.settings.command_topic, 10)
        else:
            from std_msgs.msg import Float64MultiArray

            self.publisher = node.create_lifecycle_publisher(
                Float64MultiArray, self.settings.command_topic, 10)
        self.published = 0

    def publish(self, stamp: float, tracking: bool, seq: int | None) -> None:
        """Loop thread, with each published arm command: the gripper's, if it has one yet."""
        positions = self.path.command(stamp, tracking, seq)
        if positions is None:
            return
        if self.settings.command_type == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

            msg = JointTrajectory()
            msg.header.stamp = sec_to_stamp(stamp)
            msg.joint_names = self.path.joints
            pt = JointTrajectoryPoint()
            pt.positions = [float(x) for x in positions]
            pt.time_from_start = sec_to_duration(self.lead + self.period)
            msg.points = [pt]
        else:
            from std_msgs.msg import Float64MultiArray

            msg = Float64MultiArray()
            msg.data = [float(x) for x in positions]
        self.publisher.publish(msg)
        self.published += 1

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
