"""`sim_arm`: the simulated Panda as a ROS 2 node that speaks the same topics as a real arm.

    ros2 run diffusion_controller sim_arm --ros-args -p seed:=3

Publishes (every name is a parameter):
- /joint_states (sensor_msgs/JointState): the 7 arm joints and the 2 fingers, every physics tick
  (`rate_hz`, 100 Hz), reliable with a short queue, so both reliable and best-effort
  (sensor-data) subscribers match.
- /camera/image_raw (sensor_msgs/Image, rgb8, `image_width` x `image_height`) at `camera_rate_hz`.
- /robot_description (std_msgs/String, transient local): the URDF that is simulated.
- /sim/task (std_msgs/String, transient local): the current task as TaskSpec JSON, after each reset.
- /sim/contacts (std_msgs/String JSON) at `contacts_rate_hz` and at once on a new collision:
  collision events counted from physics, contact pairs, min arm-obstacle clearance, the tool point,
  and the task verdict so far (success / collision / timeout, which side).
- /clock (rosgraph_msgs/Clock) when `publish_clock` is true; stamps are then sim time, otherwise
  the node's clock.

Subscribes to /forward_position_controller/commands (std_msgs/Float64MultiArray): 7 positions in
the order of the `joint_names` parameter, tracked with position control. Commands of the wrong
length or with NaN/Inf are dropped with a throttled warning and counted; values outside the URDF
limits are clipped, as the real arm's limits would stop it.

Service ~/reset (std_srvs/Trigger): reset the world to the task of the current `seed` parameter
(set it first with `ros2 param set /sim_arm seed 7`); the response message is the task JSON.
Changing `seed` alone does not reset.

Physics runs in a thread of its own on absolute deadlines (`time.monotonic`), one `rate_hz` tick
of sim time per `1 / (rate_hz * real_time_factor)` s of wall time; all PyBullet calls stay in that
thread. If it falls behind by more than a few ticks it drops the backlog instead of racing, and
counts the overrun.
"""

from __future__ import annotations

import array
import json
import math
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.task import TaskMonitor, sample_task
from diffusion_controller.sim.world import SimWorld, WorldConfig

_READ_ONLY = "read only: set at start-up"


class SimArmNode(Node):
    """PyBullet Panda + camera + task, stepped in real time (or faster) in its own thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_arm", **kwargs)
        self._declare()
        p = self._params()
        self.joint_names: list[str] = p["joint_names"]
        self._order = [self.joint_names.index(n) for n in ARM_JOINTS]  # ours <- command order
        self.world = SimWorld(
            WorldConfig(
                timestep=p["timestep"],
                image_width=p["image_width"],
                image_height=p["image_height"],
            )
        )
        self.tick_dt = 1.0 / p["rate_hz"]
        self.rtf = p["real_time_factor"]
        self.camera_period = 1.0 / p["camera_rate_hz"]
        self.contacts_period = 1.0 / p["contacts_rate_hz"]
        self.publish_clock = p["publish_clock"]
        self.frame_id = p["camera_frame_id"]
        if self.rtf != 1.0 and not self.publish_clock:
            self.get_logger().warning(
                "real_time_factor != 1 without publish_clock: stamps follow the wall clock, so "
                "consumers will see time-scaled motion; set publish_clock and use_sim_time"
            )

        sensor = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE
        )
        latched = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.pub_joints = self.create_publisher(JointState, p["joint_states_topic"], sensor)
        self.pub_image = self.create_publisher(Image, p["image_topic"], sensor)
        self.pub_urdf = self.create_publisher(String, p["robot_description_topic"], latched)
        self.pub_task = self.create_publisher(String, p["task_topic"], latched)
        self.pub_contacts = self.create_publisher(String, p["contacts_topic"], 10)
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if self.publish_clock else None
        self.create_subscription(
            Float64MultiArray, p["command_topic"], self._on_command, QoSProfile(depth=10)
        )
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._lock = threading.Lock()
        self._pending_cmd: np.ndarray | None = None
        self._reset_request: threading.Event | None = None
        self._reset_seed = 0
        self._reset_reply = ""
        self.rejected = 0
        self.commands = 0
        self.stats = {"ticks": 0, "overruns": 0, "max_late_ms": 0.0, "work_ms_sum": 0.0}
        self._sim_clock = 0.0  # monotonic sim time across resets (for /clock and stamps)
        self.monitor: TaskMonitor | None = None
        self._episode = 0
        self._clearance_window = math.inf
        self._events_reported = 0

        self.pub_urdf.publish(String(data=self.world.urdf_text))
        self._reset_world(int(p["seed"]))
        self._running = threading.Event()
        self._running.set()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._physics_loop, name="sim_physics", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"sim_arm up: seed {p['seed']}, {p['rate_hz']:.0f} Hz physics ticks, camera "
            f"{p['image_width']}x{p['image_height']} at {p['camera_rate_hz']:.0f} Hz, "
            f"real-time factor {self.rtf}"
        )

    # --- parameters -----------------------------------------------------------------------------
    def _declare(self) -> None:
        def d(name: str, value: Any, text: str, read_only: bool = True) -> None:
            self.declare_parameter(
                name, value, ParameterDescriptor(description=text, read_only=read_only)
            )

        d("seed", 0, "task seed used by the next ~/reset (and at start-up)", read_only=False)
        d("joint_names", list(ARM_JOINTS), "order of the 7 positions in a command message")
        d("rate_hz", 100.0, "physics tick and /joint_states rate (Hz), 50..1000")
        d("timestep", 1.0 / 500.0, "physics step (s); each tick runs whole steps")
        d("camera_rate_hz", 15.0, "camera rate (Hz), 0.5..60")
        d("image_width", 96, "camera image width (pixels)")
        d("image_height", 96, "camera image height (pixels)")
        d("camera_frame_id", "camera_optical_frame", "frame_id of the images")
        d("contacts_rate_hz", 10.0, "rate of /sim/contacts reports (Hz)")
        d("real_time_factor", 1.0, "sim seconds per wall second, 0.1..20")
        d("publish_clock", False, "publish /clock and stamp with sim time")
        d("joint_states_topic", "/joint_states", "JointState output topic")
        d("image_topic", "/camera/image_raw", "Image output topic")
        d("robot_description_topic", "/robot_description", "URDF output (transient local)")
        d("command_topic", "/forward_position_controller/commands", "Float64MultiArray input")
        d("task_topic", "/sim/task", "TaskSpec JSON output (transient local)")
        d("contacts_topic", "/sim/contacts", "contacts and task verdict JSON output")

    def _params(self) -> dict[str, Any]:
        names = [
            "seed", "joint_names", "rate_hz", "timestep", "camera_rate_hz", "image_width",
            "image_height", "camera_frame_id", "contacts_rate_hz", "real_time_factor",
            "publish_clock", "joint_states_topic", "image_topic", "robot_description_topic",
            "command_topic", "task_topic", "contacts_topic",
        ]  # fmt: skip
        p = {n: self.get_parameter(n).value for n in names}
        problems = []
        if sorted(p["joint_names"]) != sorted(ARM_JOINTS):
            problems.append(f"joint_names must be a permutation of {list(ARM_JOINTS)}")
        if int(p["seed"]) < 0:
            problems.append("seed must be >= 0")
        checks = [
            ("rate_hz", 50.0, 1000.0),
            ("camera_rate_hz", 0.5, 60.0),
            ("contacts_rate_hz", 0.5, 100.0),
            ("real_time_factor", 0.1, 20.0),
            ("image_width", 8, 1024),
            ("image_height", 8, 1024),
            ("timestep", 1e-4, 0.01),
        ]
        for name, lo, hi in checks:
            if not lo <= p[name] <= hi:
                problems.append(f"{name} must be within [{lo}, {hi}], got {p[name]}")
        if not problems and p["timestep"] > 1.0 / p["rate_hz"] + 1e-12:
            problems.append("timestep must not exceed one tick (1 / rate_hz)")
        if problems:
            raise ValueError("sim_arm parameters rejected: " + "; ".join(problems))
        p["joint_names"] = list(p["joint_names"])
        return p

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for prm in params:
            if prm.name == "seed":
                if not isinstance(prm.value, int) or prm.value < 0:
                    return SetParametersResult(successful=False, reason="seed must be an int >= 0")
            elif prm.name != "use_sim_time":
                return SetParametersResult(successful=False, reason=f"{prm.name} is {_READ_ONLY}")
        return SetParametersResult(successful=True)

    # --- inputs ---------------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (7,):
            self._reject(f"command has {data.size} values, expected 7 ({self.joint_names})")
            return
        if not np.all(np.isfinite(data)):
            self._reject("command contains NaN or Inf")
            return
        with self._lock:
            self._pending_cmd = data[self._order]
            self.commands += 1

    def _reject(self, why: str) -> None:
        with self._lock:
            self.rejected += 1
        self.get_logger().warning(f"dropped command: {why}", throttle_duration_sec=2.0)

    def _on_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        seed = int(self.get_parameter("seed").value)
        done = threading.Event()
        with self._lock:
            self._reset_request = done
            self._reset_seed = seed
        if not done.wait(timeout=5.0):
            res.success = False
            res.message = "physics thread did not answer within 5 s"
            return res
        res.success = True
        res.message = self._reset_reply
        return res

    # --- physics thread -------------------------------------------------------------------------
    def _reset_world(self, seed: int) -> None:
        spec = sample_task(seed)
        self.world.reset(spec)
        self.monitor = TaskMonitor(spec)
        self._episode += 1
        self._events_reported = 0
        self._clearance_window = math.inf
        with self._lock:
            self._pending_cmd = None
        text = spec.to_json()
        self._reset_reply = text
        self.pub_task.publish(String(data=text))
        self.get_logger().info(f"reset to task seed {seed}")

    def _stamp(self) -> Any:
        if self.publish_clock:
            ns = round(self._sim_clock * 1e9)
            from builtin_interfaces.msg import Time

            return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        return self.get_clock().now().to_msg()

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
            reset, self._reset_request = self._reset_request, None
            seed = self._reset_seed
        if reset is not None:
            self._reset_world(seed)
            reset.set()
            cmd = None
            next_frame = next_report = self._sim_clock
        if cmd is not None:
            self.world.command(cmd)
        contacts = self.world.step(self.tick_dt)
        self._sim_clock += self.tick_dt
        stamp = self._stamp()
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        q, v, tau = self.world.joint_state_full()
        self.pub_joints.publish(
            JointState(
                header=_header(stamp, ""),
                name=self.world.joint_names,
                position=q.tolist(),
                velocity=v.tolist(),
                effort=tau.tolist(),
            )
        )
        clearance = self.world.min_clearance()
        self._clearance_window = min(self._clearance_window, clearance)
        tool = self.world.tool_position()
        assert self.monitor is not None
        self.monitor.update(self.world.time, tool, contacts.new_events, clearance)
        if self._sim_clock >= next_frame - 1e-9:
            self._publish_image(stamp)
            next_frame += self.camera_period
            if next_frame < self._sim_clock:
                next_frame = self._sim_clock + self.camera_period
        if self._sim_clock >= next_report - 1e-9 or contacts.new_events:
            self._publish_contacts(stamp, tool)
            if self._sim_clock >= next_report - 1e-9:
                next_report += self.contacts_period
                if next_report < self._sim_clock:
                    next_report = self._sim_clock + self.contacts_period
        return next_frame, next_report

    def _publish_image(self, stamp: Any) -> None:
        img = self.world.render()
        h, w = img.shape[:2]
        msg = Image(
            header=_header(stamp, self.frame_id),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
        )
        msg.data = array.array("B", img.tobytes())  # the fast path of the generated setter
        self.pub_image.publish(msg)

    def _publish_contacts(self, stamp: Any, tool: np.ndarray) -> None:
        c = self.world.contacts
        assert self.monitor is not None
        out = self.monitor.outcome()
        with self._lock:
            rejected, commands = self.rejected, self.commands
        payload = {
            "stamp": stamp.sec + 1e-9 * stamp.nanosec,
            "episode": self._episode,
            "seed": self.monitor.spec.seed,
            "sim_time": self.world.time,
            "collision_events": c.events,
            "new_events": c.events - self._events_reported,
            "in_contact": c.in_contact,
            "pairs": [list(pair) for pair in c.pairs],
            "max_depth": c.max_depth,
            "min_clearance": _finite(self._clearance_window),
            "min_clearance_episode": _finite(out.min_clearance),
            "tool": [float(x) for x in tool],
            "at_target": bool(self.monitor.spec.tool_at_target(tool)),
            "success": out.success,
            "collided": out.collided,
            "timed_out": out.timed_out,
            "done": self.monitor.done,
            "side": out.side,
            "commands": commands,
            "rejected_commands": rejected,
        }
        self._events_reported = c.events
        self._clearance_window = math.inf
        self.pub_contacts.publish(String(data=json.dumps(payload)))

    # --- lifetime -------------------------------------------------------------------------------
    def real_time_factor_measured(self) -> float:
        """Sim seconds advanced per wall second since start-up."""
        return self._sim_clock / max(time.monotonic() - self._started, 1e-9)

    def stop(self) -> None:
        self._running.clear()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.world.close()


def _header(stamp: Any, frame_id: str) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id=frame_id)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node: SimArmNode | None = None
    code = 0
    try:
        node = SimArmNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as exc:  # rejected parameters: say why and exit non-zero
        print(f"sim_arm: {exc}")
        code = 2
    finally:
        if node is not None:
            s = node.stats
            ticks = max(s["ticks"], 1)
            print(
                f"sim_arm: {s['ticks']} ticks, mean work {s['work_ms_sum'] / ticks:.2f} ms, "
                f"max lateness {s['max_late_ms']:.1f} ms, overruns {s['overruns']}, real-time "
                f"factor {node.real_time_factor_measured():.3f}, "
                f"{node.commands} commands, {node.rejected} rejected",
                flush=True,
            )
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
