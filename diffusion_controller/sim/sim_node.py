"""`sim_arm`: the simulated Panda as a ROS 2 node that speaks the same topics as a real arm.

    ros2 run diffusion_controller sim_arm --ros-args -p seed:=3

Publishes (every name is a parameter; the defaults are relative, so `namespace:=` / `__ns` moves
them, and resolve to the absolute names below without a namespace; /clock and /diagnostics stay
absolute by ROS convention):
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

The robot side (sim/robot_side.py), parameter `robot_controller`: `ideal` (default, the arm
tracks each 10 ms command as before, no robot-side model), `forward` (a forward_command_controller
on /forward_position_controller/commands: the last command written every 1 ms) or `trajectory`
(joint_trajectory_controller with open_loop_control true on `trajectory_topic`, trajectory_msgs/
JointTrajectory, with `cmd_timeout`). In `forward` and `trajectory` the 1 kHz commanded signal is
checked per joint against the FR3's position/velocity/acceleration/jerk limits as libfranka does;
a violation is a reflex: the arm holds, commands are ignored, the reflex (joint, quantity, value,
limit) goes out on `reflex_topic` (std_msgs/String JSON) and /diagnostics (ERROR, "sim_arm:
robot"), and /sim/contacts counts `reflexes` per episode. Recovery, as franka's error recovery:
call ~/error_recovery (std_srvs/Trigger); the arm restarts from its measured position at rest.
~/reset also clears it.

Service ~/reset (std_srvs/Trigger): reset the world to the task of the current `seed` parameter
(set it first with `ros2 param set /sim_arm seed 7`); the response message is the task JSON with
`extra.episode`, the episode number /sim/contacts reports carry from then on. Changing `seed` alone
does not reset. The task on /sim/task carries `extra.perturbation` when one is in force.

Perturbations for robustness evaluation (sim/perturbation.py), parameters that may be set at any
time and take effect at the next ~/reset, like `seed`: `image_delay` and `joint_state_delay`
(frames and joint states delivered late, stamped when taken), `image_noise` and `joint_noise`
(Gaussian), `image_drop_prob` (frames dropped), `obstacle_shift` [dx, dy] at `obstacle_shift_time`
s after the reset (the obstacle jumps; /sim/task is published again with the moved obstacle and
`extra.obstacle_shifted_at`). `episode_timeout` (> 0) replaces the task's own timeout. Physics and
the task verdict always see the true state.

Physics runs in a thread of its own on absolute deadlines (`time.monotonic`), one `rate_hz` tick
of sim time per `1 / (rate_hz * real_time_factor)` s of wall time; all PyBullet calls stay in that
thread. If it falls behind by more than a few ticks it drops the backlog instead of racing, and
counts the overrun.
"""

from __future__ import annotations

import array
import dataclasses
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
from diffusion_controller.sim.node_robot import RobotSideMixin
from diffusion_controller.sim.perturbation import DelayLine, Perturbation, SensorPerturber
from diffusion_controller.sim.task import TaskMonitor, sample_task
from diffusion_controller.sim.world import SimWorld, WorldConfig

_READ_ONLY = "read only: set at start-up"
# Parameters applied at the next ~/reset (with `seed`): the perturbation and the timeout.
_PERTURBATION_PARAMS = (
    "image_delay", "joint_state_delay", "image_noise", "joint_noise", "image_drop_prob",
    "obstacle_shift", "obstacle_shift_time", "image_freeze",
)  # fmt: skip
_EPISODE_PARAMS = ("seed", *_PERTURBATION_PARAMS, "episode_timeout")


class SimArmNode(RobotSideMixin, Node):
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
        self._reset_setup: tuple[Perturbation, float] = (Perturbation(), 0.0)
        self.perturbation = Perturbation()
        self._perturber = SensorPerturber(self.perturbation, 0)
        self._image_line = DelayLine()
        self._joint_line = DelayLine()
        self._shift_due: float | None = None
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
        self._reset_world(int(p["seed"]), *self._episode_setup())
        self._init_robot_side(p)
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
        d("joint_states_topic", "joint_states", "JointState output topic")
        d("image_topic", "camera/image_raw", "Image output topic")
        d("robot_description_topic", "robot_description", "URDF output (transient local)")
        d("command_topic", "forward_position_controller/commands", "Float64MultiArray input")
        d("task_topic", "sim/task", "TaskSpec JSON output (transient local)")
        d("contacts_topic", "sim/contacts", "contacts and task verdict JSON output")
        at_reset = "; applied at the next ~/reset"
        d("image_delay", 0.0, "camera frames published this late (s), 0..1" + at_reset, False)
        d(
            "joint_state_delay",
            0.0,
            "joint states published this late (s), 0..0.5" + at_reset,
            False,
        )
        d("image_noise", 0.0, "Gaussian pixel noise std (0..255 levels), 0..128" + at_reset, False)
        d("joint_noise", 0.0, "Gaussian joint position noise std (rad), 0..0.1" + at_reset, False)
        d(
            "image_drop_prob",
            0.0,
            "probability of dropping a camera frame, 0..0.95" + at_reset,
            False,
        )
        d(
            "obstacle_shift",
            [0.0, 0.0],
            "obstacle jump (dx, dy) in m, at most 0.2 m" + at_reset,
            False,
        )
        d(
            "obstacle_shift_time",
            1.0,
            "sim seconds after the reset when the obstacle jumps" + at_reset,
            False,
        )
        d("image_freeze", 0.0, "1: every camera frame is the episode's first" + at_reset, False)
        d("episode_timeout", 0.0, "task timeout in s (0: the task's own)" + at_reset, False)
        d("robot_controller", "ideal", "robot side: ideal | forward | trajectory (1 kHz checks)")
        d(
            "trajectory_topic",
            "joint_trajectory_controller/joint_trajectory",
            "JointTrajectory input (robot_controller trajectory)",
        )
        d("cmd_timeout", 0.5, "trajectory controller: hold after this long without a message (s)")
        d("reflex_topic", "~/reflex", "reflex reports (std_msgs/String JSON)")

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
        values: dict[str, Any] = {}
        for prm in params:
            if prm.name == "seed":
                if not isinstance(prm.value, int) or prm.value < 0:
                    return SetParametersResult(successful=False, reason="seed must be an int >= 0")
            elif prm.name == "episode_timeout":
                t = prm.value
                if not isinstance(t, (int, float)) or not (t == 0 or 0.5 <= t <= 3600):
                    return SetParametersResult(
                        successful=False, reason="episode_timeout must be 0 or in [0.5, 3600] s"
                    )
            elif prm.name in _PERTURBATION_PARAMS:
                values[prm.name] = prm.value
            elif prm.name != "use_sim_time":
                return SetParametersResult(successful=False, reason=f"{prm.name} is {_READ_ONLY}")
        if values:
            current = {n: self.get_parameter(n).value for n in _PERTURBATION_PARAMS}
            current.update(values)
            try:
                Perturbation.from_dict(current)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _episode_setup(self) -> tuple[Perturbation, float]:
        """The perturbation and timeout the next reset applies (validated when they were set)."""
        values = {n: self.get_parameter(n).value for n in _PERTURBATION_PARAMS}
        try:
            pert = Perturbation.from_dict(values)
        except ValueError as exc:  # start-up values come from the command line unchecked
            self.get_logger().error(f"perturbation ignored: {exc}")
            pert = Perturbation()
        return pert, float(self.get_parameter("episode_timeout").value)

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
        setup = self._episode_setup()
        done = threading.Event()
        with self._lock:
            self._reset_request = done
            self._reset_seed = seed
            self._reset_setup = setup
        if not done.wait(timeout=5.0):
            res.success = False
            res.message = "physics thread did not answer within 5 s"
            return res
        res.success = True
        res.message = self._reset_reply
        return res

    # --- physics thread -------------------------------------------------------------------------
    def _reset_world(
        self, seed: int, perturbation: Perturbation | None = None, timeout: float = 0.0
    ) -> None:
        pert = perturbation or Perturbation()
        self._episode += 1
        spec = sample_task(seed)
        if pert.active:
            spec = dataclasses.replace(spec, extra={"perturbation": pert.to_dict()})
        if timeout > 0:
            spec = dataclasses.replace(spec, timeout=float(timeout))
        self.world.reset(spec)
        self.monitor = TaskMonitor(spec)
        self.perturbation = pert
        self._perturber = SensorPerturber(pert, seed)
        self._image_line.clear()
        self._joint_line.clear()
        self._shift_due = pert.obstacle_shift_time if pert.shifts_obstacle else None
        self._events_reported = 0
        self._clearance_window = math.inf
        with self._lock:
            self._pending_cmd = None
        self.pub_task.publish(String(data=spec.to_json()))
        reply = spec.to_dict()
        reply["extra"] = {**spec.extra, "episode": self._episode}
        self._reset_reply = json.dumps(reply)
        what = f" with perturbation {pert.to_dict()}" if pert.active else ""
        self.get_logger().info(f"reset to task seed {seed}{what}")

    def _shift_obstacle(self) -> None:
        """The scheduled obstacle jump: move it, judge against the moved one, tell everyone."""
        assert self.monitor is not None
        self._shift_due = None
        ob = self.monitor.spec.obstacle
        dx, dy = self.perturbation.obstacle_shift
        spec = self.world.move_obstacle(ob.x + dx, ob.y + dy)
        extra = dict(spec.extra)
        extra["obstacle_shifted_at"] = self.world.time
        spec = dataclasses.replace(spec, extra=extra)
        self.world.spec = spec
        self.monitor.spec = spec
        self.pub_task.publish(String(data=spec.to_json()))
        self.get_logger().info(f"obstacle shifted by ({dx:+.3f}, {dy:+.3f}) m")

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
            seed, setup = self._reset_seed, self._reset_setup
        if reset is not None:
            self._reset_world(seed, *setup)
            reset.set()
            cmd = None
            next_frame = next_report = self._sim_clock
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
            header=_header(stamp, ""),
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

    def _capture_image(self, stamp: Any) -> None:
        """Render a frame now; publish it now or, under a delay, when it is due."""
        img = self._perturber.image(self.world.render())
        if img is None:
            return  # dropped
        if self.perturbation.image_delay > 0.0:
            self._image_line.push(self._sim_clock + self.perturbation.image_delay, (stamp, img))
        else:
            self._publish_image(stamp, img)

    def _publish_image(self, stamp: Any, img: np.ndarray) -> None:
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
            "frames_dropped": self._perturber.dropped,
            "robot_controller": self.robot.kind if self.robot is not None else "ideal",
            "reflexes": self.robot.reflexes if self.robot is not None else 0,
            "last_reflex": (
                self.robot.last_reflex.to_dict()
                if self.robot is not None and self.robot.last_reflex is not None
                else None
            ),
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
