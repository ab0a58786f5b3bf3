"""The node's gripper adapter: finger joint states in, gripper commands out (control/gripper.py).

Everything the controller node does for a model whose actions include a gripper, in one place so
the node only wires it: the joints the joint-state filter must find (the arm's, then the
gripper's), the model-order state the observation buffer gets (arm joints, then gripper dims),
the chunk split (arm part to the loop, gripper part to the GripperCommander), and one gripper
message per published arm command. A model without a gripper gets no GripperIO at all: no
publisher, no extra joints, the node exactly as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffusion_controller.control.gripper import GripperCommander, GripperSettings
from diffusion_controller.control.types import Chunk
from diffusion_controller.data.gripper import GripperConfig
from diffusion_controller.ros import diagnostics as diag
from diffusion_controller.ros.conversions import sec_to_duration, sec_to_stamp


class GripperIO:
    """One model's gripper on one node: `arm` arm joints first in every model vector."""

    def __init__(self, node: Any, gripper: GripperConfig, arm: int, values: dict[str, Any]) -> None:
        self.gripper = gripper
        self.arm = int(arm)
        self.settings = GripperSettings.from_values(values)
        self.lead = float(values["trajectory_lead"])
        self.period = 1.0 / float(values["control_rate_hz"])
        if values["command_interface"] == "trajectory":
            every = max(1, round(float(values["control_rate_hz"])
                                 / float(values["trajectory_rate_hz"])))
            self.period *= every  # one gripper message per streamed arm trajectory
        self.commander = GripperCommander(gripper.dim, self.settings, self.period)
        if self.settings.command_type == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectory

            self.publisher = node.create_lifecycle_publisher(
                JointTrajectory, self.settings.command_topic, 10)
        else:
            from std_msgs.msg import Float64MultiArray

            self.publisher = node.create_lifecycle_publisher(
                Float64MultiArray, self.settings.command_topic, 10)
        self.published = 0

    @property
    def joints(self) -> list[str]:
        """The gripper joints the joint-state filter must find after the arm's."""
        return list(self.gripper.joints)

    def joint_sample(self, positions: np.ndarray, velocities: np.ndarray | None,
                     to_model: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """A filtered joint state [arm (controller order)..., gripper joints...] -> the arm's
        positions and velocities for the loop, and the model's state [arm (model order)...,
        gripper dims...] for the observation buffer; records the measured gripper dims."""
        q_arm = positions[:self.arm]
        dims = self.gripper.to_dims(positions[self.arm:])
        self.commander.measure(dims)
        v_arm = None if velocities is None else velocities[:self.arm]
        return q_arm, v_arm, np.concatenate([q_arm[to_model], dims])

    def split(self, chunk: Chunk) -> Chunk:
        """Worker thread: keep the chunk's gripper dims; return the chunk with only the arm's."""
        positions = np.asarray(chunk.positions)
        self.commander.submit(chunk.t0, chunk.dt, positions[:, self.arm:], chunk.seq)
        return Chunk(chunk.t0, chunk.dt, positions[:, :self.arm], chunk.seq)

    def join(self, arm_chunk: Chunk) -> Chunk:
        """The current chunk in model layout again (arm in model order + its gripper dims)."""
        dims = self.commander.dims_for(arm_chunk.seq)
        if dims is None:  # not ours (never expected): the command in force, held
            held = self.commander.commanded
            if held is None:
                held = np.zeros(self.gripper.dim)
            dims = np.repeat(held[None], arm_chunk.horizon, axis=0)
        return Chunk(arm_chunk.t0, arm_chunk.dt,
                     np.concatenate([np.asarray(arm_chunk.positions), dims], axis=1),
                     arm_chunk.seq)

    def publish(self, stamp: float, tracking: bool, seq: int | None) -> None:
        """Loop thread, with each published arm command: the gripper's, if it has one yet."""
        dims = self.commander.step(stamp, tracking, seq)
        if dims is None:
            return
        positions = self.gripper.to_joint_positions(dims)
        if self.settings.command_type == "joint_trajectory":
            from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

            msg = JointTrajectory()
            msg.header.stamp = sec_to_stamp(stamp)
            msg.joint_names = self.joints
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
        c = self.commander
        cmd, meas = c.commanded, c.measured
        if meas is None:
            level, text = diag.WARN, f"no finger joint states yet ({', '.join(self.joints)})"
        elif cmd is None:
            level, text = diag.OK, "not commanded yet"
        else:
            level, text = diag.OK, f"commanded {', '.join(f'{x:.4f}' for x in cmd)} m"
        values = [("dims", self.gripper.dim_names), ("topic", self.settings.command_topic),
                  ("commanded_m", [] if cmd is None else [float(x) for x in cmd]),
                  ("measured_m", [] if meas is None else [float(x) for x in meas]),
                  ("published", self.published), ("held_ticks", c.held_ticks),
                  ("speed_limited_ticks", c.limited_ticks)]
        return diag.StatusEntry(f"{prefix}: gripper", level, text, diag.kv(values))
