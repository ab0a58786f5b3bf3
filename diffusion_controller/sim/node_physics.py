"""sim_arm's physics thread: the real-time tick loop and what one physics tick does.

A mixin of SimArmNode (kept apart so sim_node.py stays readable, as node_robot.py and
node_outputs.py are): the loop on absolute `time.monotonic` deadlines that drops its backlog when
hopelessly behind, and the tick itself (take pending commands and resets, step the world or the
robot side, publish /clock and joint states, update the task monitor, camera and contacts on their
periods). All PyBullet calls stay in this thread. See sim_node's module docstring for the topics.
"""

from __future__ import annotations

import time
from typing import Any

import rclpy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState

from diffusion_controller.sim.node_outputs import header_at


class PhysicsLoopMixin:
    """Needs from the node: world, tick_dt, rtf, stats, periods, publishers, perturber, monitor."""

    world: Any
    tick_dt: float
    rtf: float
    stats: dict[str, Any]
    camera_period: float
    contacts_period: float
    _sim_clock: float

    def _physics_loop(self) -> None:
        wall_period = self.tick_dt / self.rtf
        next_tick = time.monotonic()
        next_frame = 0.0
        next_report = 0.0
        while self._running.is_set() and rclpy.ok(context=self.context):
            work_start = time.monotonic()
            try:
                next_frame, next_report = self._tick(next_frame, next_report)
            except Exception as exc:  # never let the physics thread die silently
                self.get_logger().error(f"physics tick failed: {exc!r}", throttle_duration_sec=2.0)
            now = time.monotonic()
            self.stats["ticks"] += 1
            self.stats["work_ms_sum"] += (now - work_start) * 1e3
            late = now - next_tick
            self.stats["max_late_ms"] = max(self.stats["max_late_ms"], late * 1e3)
            next_tick += wall_period
            if now - next_tick > 5 * wall_period:  # hopelessly behind: drop the backlog
                self.stats["overruns"] += 1
                next_tick = now + wall_period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _tick(self, next_frame: float, next_report: float) -> tuple[float, float]:
        with self._lock:
            cmd, self._pending_cmd = self._pending_cmd, None
            grip, self._pending_gripper = self._pending_gripper, None
            reset, self._reset_request = self._reset_request, None
            seed, setup = self._reset_seed, self._reset_setup
        if reset is not None:
            self._reset_world(seed, *setup)
            reset.set()
            cmd = grip = None
            next_frame = next_report = self._sim_clock
        if grip is not None:  # the hand is its own controller, beside the arm's
            self.world.command_gripper(grip)
        if self.robot is not None:
            new_events = self._robot_tick(cmd, reset is not None)
            contacts = self.world.contacts
            contacts.new_events = new_events
        else:
            if cmd is not None:
                self.world.command(cmd)
            contacts = self.world.step(self.tick_dt)
        self._sim_clock += self.tick_dt
        stamp = self._stamp()
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        if self._shift_due is not None and self.world.time >= self._shift_due - 1e-9:
            self._shift_obstacle()
        q, v, tau = self.world.joint_state_full()
        joints = JointState(
            header=header_at(stamp, ""),
            name=self.world.joint_names,
            position=self._perturber.joints(q).tolist(),
            velocity=v.tolist(),
            effort=tau.tolist(),
        )
        if self.perturbation.joint_state_delay > 0.0:
            self._joint_line.push(self._sim_clock + self.perturbation.joint_state_delay, joints)
            for msg in self._joint_line.pop_due(self._sim_clock):
                self.pub_joints.publish(msg)
        else:
            self.pub_joints.publish(joints)
        clearance = self.world.min_clearance()
        self._clearance_window = min(self._clearance_window, clearance)
        tool = self.world.tool_position()
        assert self.monitor is not None
        self.monitor.update(self.world.time, tool, contacts.new_events, clearance)
        if self._sim_clock >= next_frame - 1e-9:
            self._capture_image(stamp)
            next_frame += self.camera_period
            if next_frame < self._sim_clock:
                next_frame = self._sim_clock + self.camera_period
        if self._sim_clock >= next_report - 1e-9 or contacts.new_events:
            self._publish_contacts(stamp, tool)
            if self._sim_clock >= next_report - 1e-9:
                next_report += self.contacts_period
                if next_report < self._sim_clock:
                    next_report = self._sim_clock + self.contacts_period
        for frame_stamp, img in self._image_line.pop_due(self._sim_clock):
            self._publish_image(frame_stamp, img)
        return next_frame, next_report
