"""sim_arm's robot side: the 1 kHz controller and FR3 checks of sim/robot_side.py behind ROS.

A mixin of SimArmNode (kept apart so sim_node.py stays readable): the JointTrajectory input, the
1 ms sub-steps of a physics tick, reflex reports on `reflex_topic` and /diagnostics, and the
~/error_recovery service. See sim_node's module docstring for the behaviour.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.qos import QoSProfile
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from diffusion_controller.sim import robot_side
from diffusion_controller.sim.kinematics import ARM_JOINTS

PACE_AHEAD = 0.02  # s: how far the arm's cycles run past the last message received ...
MAX_BEHIND = 0.15  # s: ... while they are at most this far behind the clock

try:  # rclpy hands a two-argument callback the message info (Iron and later)
    from rclpy.subscription import MessageInfo as _MessageInfo  # noqa: F401

    _MESSAGE_INFO = True
except ImportError:  # Humble: message only; arrival is when the callback runs
    _MESSAGE_INFO = False


class RobotSideMixin:
    """Needs from the node: world, tick_dt, publish_clock, _sim_clock, _lock, _stamp, _reject."""

    world: Any
    tick_dt: float
    publish_clock: bool
    _sim_clock: float
    _lock: threading.Lock
    commands: int

    def _init_robot_side(self, p: dict[str, Any]) -> None:
        kind, timeout = str(p["robot_controller"]), float(p["cmd_timeout"])  # checked: the table
        self.robot: robot_side.RobotSide | None = None
        # received messages (points, stamp, arrival) for the next tick's 1 kHz cycles
        self._pending_traj: list[tuple[list[robot_side.TrajectoryPoint], float, float]] = []
        if kind == "ideal":
            return
        if self.tick_dt / robot_side.DT % 1 > 1e-9 or p["timestep"] / robot_side.DT % 1 > 1e-9:
            raise ValueError("sim_arm parameters rejected: rate_hz and timestep must be whole ms")
        self.robot = robot_side.RobotSide(kind, ARM_JOINTS, self.world.arm_state()[0], timeout)
        if kind == "trajectory":
            # with the message info, arrival is when DDS received the message, not when this
            # process's executor got round to it (a loaded simulator may take 100 ms)
            cb = self._on_trajectory_info if _MESSAGE_INFO else self._on_trajectory
            self.create_subscription(
                JointTrajectory, p["trajectory_topic"],
                cb, QoSProfile(depth=50),
            )  # fmt: skip
        self.pub_reflex = self.create_publisher(String, p["reflex_topic"], 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._recover_request: threading.Event | None = None
        self.create_service(Trigger, "~/error_recovery", self._on_error_recovery)

    def _on_trajectory_info(self, msg: JointTrajectory, info: Any) -> None:
        received = int(info.get("received_timestamp", 0)) if isinstance(info, dict) else 0
        self._on_trajectory(msg, received * 1e-9 if received > 0 and not self.publish_clock
                            else None)  # fmt: skip

    def _on_trajectory(self, msg: JointTrajectory, received: float | None = None) -> None:
        try:
            idx = [list(msg.joint_names).index(n) for n in ARM_JOINTS]
            pts = []
            for pt in msg.points:
                vals = [np.asarray(x, dtype=np.float64) for x in
                        (pt.positions, pt.velocities, pt.accelerations)]  # fmt: skip
                if vals[0].size != len(msg.joint_names) or any(
                    v.size not in (0, len(msg.joint_names)) or not np.all(np.isfinite(v))
                    for v in vals
                ):
                    raise ValueError("point sizes do not match joint_names, or NaN/Inf")
                q, v, a = (x[idx] if x.size else None for x in vals)
                tfs = pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec
                pts.append(robot_side.TrajectoryPoint(tfs, q, v, a))
            if any(b.time_from_start <= a.time_from_start for a, b in itertools.pairwise(pts)):
                raise ValueError("time_from_start must increase")
        except ValueError as exc:
            self._reject(f"trajectory rejected: {exc}")
            return
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        with self._lock:
            # when it arrived, on the clock the controller's cycles run on (sim time or the
            # node's clock): the cycle at or after that time takes it
            now = self._sim_clock if self.publish_clock else (
                self.get_clock().now().nanoseconds * 1e-9)
            arrival = min(now, received) if received is not None else now
            self._pending_traj.append((pts, stamp, arrival))
            self._last_arrival = max(getattr(self, "_last_arrival", arrival), arrival)
            self.commands += 1

    def _on_error_recovery(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        done = threading.Event()
        with self._lock:
            self._recover_request = done
        res.success = done.wait(timeout=5.0)
        res.message = "recovered: holding the measured position" if res.success else "no answer"
        return res

    def _clock_s(self) -> float:
        """Now, on the clock trajectory stamps are read against: sim time with publish_clock,
        else the node's clock (the arm's controller runs on real time, whatever the physics)."""
        if self.publish_clock:
            return self._sim_clock
        return self.get_clock().now().nanoseconds * 1e-9

    def _robot_tick(self, cmd: np.ndarray | None, was_reset: bool) -> int:
        """One physics tick: the robot side's 1 kHz cycles up to the end of the tick, on the
        controller's clock (all of them since the last tick when the simulator fell behind,
        each one checked), their commands spread over the tick's physics steps; returns new
        contact events."""
        assert self.robot is not None
        with self._lock:
            trajs, self._pending_traj = self._pending_traj, []
            recover, self._recover_request = self._recover_request, None
        if was_reset:
            self.robot.reset(self.world.arm_state()[0], self._clock_s())
            trajs = []
        if recover is not None:
            self.robot.recover(self.world.arm_state()[0])
            self._report_robot(None)
            recover.set()
        t0 = self._clock_s()
        if cmd is not None and self.robot.kind == "forward":
            self.robot.command(cmd, t0)
        if self.robot.kind == "trajectory":
            for pts, stamp, arrival in trajs:
                self.robot.queue(pts, stamp, arrival)
        measured = self.world.arm_state()[0]
        t_end = t0 + self.tick_dt
        last = getattr(self, "_last_arrival", None)
        if self.robot.kind == "trajectory" and last is not None and not was_reset:
            # A starved executor hands this process messages late; their arrival (DDS time)
            # may lie in cycles not yet run. Cycles wait for messages up to PACE_AHEAD past the
            # last one received, at most MAX_BEHIND behind the clock (then, as when a stream
            # stops, they run on: the arm's controller never waits).
            t_end = max(min(t_end, last + PACE_AHEAD), t_end - MAX_BEHIND)
        qs, reflexes = self.robot.advance(t0, t_end, measured)
        for reflex in reflexes:
            self._report_robot(reflex)
        steps = round(self.tick_dt / self.world.config.timestep)
        new_events = 0
        for j in range(1, steps + 1):
            if qs:  # the cycle at the end of this physics step (the latest when bunched)
                self.world.command(qs[min(len(qs), math.ceil(j * len(qs) / steps)) - 1])
            new_events += self.world.step(self.world.config.timestep).new_events
        return new_events

    def _report_robot(self, reflex: robot_side.Reflex | None) -> None:
        status = DiagnosticStatus(name="sim_arm: robot", hardware_id="sim_fr3")
        if reflex is None:
            status.level, status.message = DiagnosticStatus.OK, "error recovery done"
        else:
            status.level = DiagnosticStatus.ERROR
            ctrl = self.robot.controller if self.robot is not None else None
            stalls = getattr(ctrl, "stalls", None)
            status.message = (
                f"reflex: {reflex.joint} commanded {reflex.quantity} {reflex.value:.4g} "
                f"beyond {reflex.limit:.4g}; arm holds until ~/error_recovery"
                + (f" (messages taken before their first point while moving: {stalls})"
                   if stalls is not None else "")
            )
            status.values = [KeyValue(key=k, value=str(v)) for k, v in reflex.to_dict().items()]
            self.pub_reflex.publish(String(data=json.dumps(reflex.to_dict())))
            self.get_logger().error(status.message)
        self.pub_diag.publish(DiagnosticArray(header=Header(stamp=self._stamp()), status=[status]))
