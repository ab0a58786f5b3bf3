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
limits are clipped, as the real arm's limits would stop it. And to /gripper_controller/commands
(`gripper_topic`, std_msgs/Float64MultiArray): [panda_finger_joint1, panda_finger_joint2] target
positions in m (each half the hand's width, 0..0.04), reached at the hand's bounded speed and
force (SimWorld: 0.05 m/s, 40 N per finger), so a closing hand stops on the cube and holds it.

Parameter `task` (read only): `panda_reach` (default) or `pick_place` (sim/tasks.py); the seed
picks the instance, /sim/task carries its JSON (with `"task": "pick_place"` for the latter) and
/sim/contacts its verdict (`label`: success, collision, dropped, wrong_place, missed_grasp,
timeout; `cube`: the cube's position).

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

import dataclasses
import json
import math
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from diffusion_controller.ros import params
from diffusion_controller.settings import sim as sim_settings
from diffusion_controller.settings.sim import PERTURBATION_SETTINGS, SIM_PARAMS, SIM_SPECS
from diffusion_controller.sim.kinematics import ARM_JOINTS
from diffusion_controller.sim.node_outputs import SimOutputsMixin
from diffusion_controller.sim.node_physics import PhysicsLoopMixin
from diffusion_controller.sim.node_robot import RobotSideMixin
from diffusion_controller.sim.perturbation import DelayLine, Perturbation, SensorPerturber
from diffusion_controller.sim.tasks import get_task
from diffusion_controller.sim.world import SimWorld, WorldConfig


class SimArmNode(PhysicsLoopMixin, SimOutputsMixin, RobotSideMixin, Node):
    """PyBullet Panda + camera + task, stepped in real time (or faster) in its own thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_arm", **kwargs)
        self._declare()
        p = self._params()
        self.joint_names: list[str] = p["joint_names"]
        self._order = [self.joint_names.index(n) for n in ARM_JOINTS]  # ours <- command order
        self.task = get_task(p["task"])
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
        self.create_subscription(
            Float64MultiArray, p["gripper_topic"], self._on_gripper, QoSProfile(depth=10)
        )
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._lock = threading.Lock()
        self._pending_cmd: np.ndarray | None = None
        self._pending_gripper: np.ndarray | None = None
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
        self.monitor: Any = None  # the task's monitor (sim/tasks.py)
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

    # --- parameters: the table in settings/sim.py, declared and checked through it ---------------
    def _declare(self) -> None:
        params.declare_all(self, SIM_PARAMS)

    def _params(self) -> dict[str, Any]:
        p = params.read_all(self, SIM_PARAMS)
        problems = sim_settings.validate(p)
        if problems:
            raise ValueError("sim_arm parameters rejected: " + "; ".join(problems))
        return p

    def _on_set_parameters(self, changes: list[Any]) -> SetParametersResult:
        values = {
            prm.name: params.to_python(SIM_SPECS[prm.name], prm.value)
            if prm.name in SIM_SPECS
            else prm.value
            for prm in changes
            if prm.name != "use_sim_time"
        }
        errors = sim_settings.check_update(params.read_all(self, SIM_PARAMS), values)
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(errors))
        return SetParametersResult(successful=True)

    def _episode_setup(self) -> tuple[Perturbation, float]:
        """The perturbation and timeout the next reset applies (checked when they were set)."""
        values = {n: self.get_parameter(n).value for n in PERTURBATION_SETTINGS}
        return Perturbation.from_dict(values), float(self.get_parameter("episode_timeout").value)

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

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (2,) or not np.all(np.isfinite(data)):
            self._reject(f"gripper command {data.tolist()} is not 2 finite finger positions")
            return
        with self._lock:
            self._pending_gripper = data

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
        spec = self.task.sample(seed)
        if pert.active:
            spec = dataclasses.replace(spec, extra={"perturbation": pert.to_dict()})
        if timeout > 0:
            spec = dataclasses.replace(spec, timeout=float(timeout))
        self.world.reset(spec)
        self.monitor = self.task.monitor(spec, self.world)
        self.perturbation = pert
        self._perturber = SensorPerturber(pert, seed)
        self._image_line.clear()
        self._joint_line.clear()
        shifts = pert.shifts_obstacle and self.world.obstacle is not None  # pick_place has none
        self._shift_due = pert.obstacle_shift_time if shifts else None
        self._events_reported = 0
        self._clearance_window = math.inf
        with self._lock:
            self._pending_cmd = None
            self._pending_gripper = None
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

    # --- lifetime -------------------------------------------------------------------------------
    def real_time_factor_measured(self) -> float:
        """Sim seconds advanced per wall second since start-up."""
        return self._sim_clock / max(time.monotonic() - self._started, 1e-9)

    def stop(self) -> None:
        self._running.clear()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.world.close()


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
