"""Run the real controller node as its own process and feed it, for benchmarks and soak runs.

- `start_controller` / `start_sim`: the real nodes as child processes
  (diffusion_controller.node_process.NodeProcess: log file, /proc readings, braking SIGINT stop).
- `Feeder`: an rclpy node that plays the arm and the camera the way a robot driver does:
  /joint_states at `joint_rate_hz` (a perfect position tracker: measured = last command, velocity
  its difference) and camera frames of a chosen size and encoding at `camera_rate_hz`; it records
  every command it receives (arrival time and positions) and the newest /diagnostics entries, and
  calls the node's services.
- `diag_float` / `diag_realtime`: read the node's /diagnostics key/values.

Used by `bench loop` and `bench soak`; it needs rclpy and the message packages.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_controller.node_process import (
    CONTROLLER_MODULE,
    SIM_MODULE,
    NodeProcess,
    child_env,
    write_params_file,
)

NODE = "diffusion_controller"
JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def start_controller(params: Mapping[str, Any], workdir: Path,
                     env: Mapping[str, str] | None = None, name: str = "controller"
                     ) -> NodeProcess:
    """The controller node with `params`; `env` adds to (or overrides) `child_env()`."""
    pfile = write_params_file(workdir / f"{name}_params.yaml", params)
    return NodeProcess(CONTROLLER_MODULE, ["--params-file", str(pfile)],
                       workdir / f"{name}.log", {**child_env(), **(env or {})}, name=name)


def start_sim(workdir: Path, params: Mapping[str, Any] | None = None) -> NodeProcess:
    args: list[str] = []
    for k, v in (params or {}).items():
        text = str(v).lower() if isinstance(v, bool) else str(v)
        args += ["-p", f"{k}:={text}"]
    return NodeProcess(SIM_MODULE, args, workdir / "sim_arm.log")


def stolen_s() -> float:
    """CPU time the hypervisor took from this (virtual) machine so far, all CPUs (/proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def diag_float(values: Mapping[str, str], key: str) -> float:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return float("nan")


def diag_realtime(values: Mapping[str, str]) -> dict[str, Any]:
    """The loop's `realtime` value ("requested=true, sched_fifo=true, ...") as a dict."""
    text = values.get("realtime", "")
    out: dict[str, Any] = {}
    for part in text.split(", "):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = {"true": True, "false": False}.get(v, v)
    return out


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples_s, dtype=float) * 1e3
    if arr.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p99 = np.percentile(arr, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(np.max(arr))}


class Feeder:
    """The arm and the camera over DDS (see the module docstring); spins in its own thread."""

    def __init__(self, play_arm: bool = True, joint_rate_hz: float = 100.0,
                 camera_rate_hz: float = 30.0, image_size: tuple[int, int] = (480, 640),
                 encoding: str = "bgr8", keep_commands: int = 200_000) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        self._rclpy = rclpy
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_feeder", context=self.context)
        self.q = HOME.copy()
        self.v = np.zeros(7)
        self.play_arm = play_arm
        self._lock = threading.Lock()
        self.cmd_times = np.zeros(keep_commands)
        self.cmd_q = np.zeros((keep_commands, 7))
        self.n_cmd = 0
        self.diag: dict[str, dict[str, str]] = {}
        self.diag_msg: dict[str, str] = {}
        self.diag_stamp = 0.0
        h, w = image_size
        ch = {"bgr8": 3, "rgb8": 3, "mono8": 1}[encoding]
        rng = np.random.default_rng(0)
        self._frames = [rng.integers(0, 256, (h, w, ch), dtype=np.uint8).tobytes()
                        for _ in range(4)]
        self._img_meta = (h, w, encoding, w * ch)
        self._frame = 0
        self._JointState, self._Image = JointState, Image
        self.js_pub = self.node.create_publisher(JointState, "/joint_states",
                                                 qos_profile_sensor_data)
        self.img_pub = self.node.create_publisher(Image, "/camera/image_raw",
                                                  qos_profile_sensor_data)
        self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                      self._on_command, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        if play_arm:
            self.node.create_timer(1.0 / joint_rate_hz, self._tick_joints)
            self.node.create_timer(1.0 / camera_rate_hz, self._tick_image)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, name="feeder", daemon=True)
        self._thread.start()

    # --- the arm and the camera ---------------------------------------------------------------
    def _tick_joints(self) -> None:
        msg = self._JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        with self._lock:
            q, v = self.q.copy(), self.v.copy()
        msg.name = list(JOINTS)
        msg.position = [float(x) for x in q]
        msg.velocity = [float(x) for x in v]
        self.js_pub.publish(msg)

    def _tick_image(self) -> None:
        h, w, enc, step = self._img_meta
        msg = self._Image()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "camera"
        msg.height, msg.width, msg.encoding, msg.step = h, w, enc, step
        msg.data = self._frames[self._frame % len(self._frames)]
        self._frame += 1
        self.img_pub.publish(msg)

    def _on_command(self, msg: Any) -> None:
        t = time.monotonic()
        q = np.asarray(msg.data, dtype=float)
        if q.shape != (7,):
            return
        with self._lock:
            if self.n_cmd:
                dt = t - self.cmd_times[(self.n_cmd - 1) % self.cmd_times.shape[0]]
                self.v = (q - self.q) / max(dt, 0.005)
            self.q = q
            i = self.n_cmd % self.cmd_times.shape[0]
            self.cmd_times[i] = t
            self.cmd_q[i] = q
            self.n_cmd += 1

    def _on_diag(self, msg: Any) -> None:
        with self._lock:
            for st in msg.status:
                self.diag[st.name] = {kv.key: kv.value for kv in st.values}
                self.diag_msg[st.name] = st.message
            self.diag_stamp = time.monotonic()

    # --- reading ------------------------------------------------------------------------------
    def entry(self, suffix: str) -> tuple[str, dict[str, str]]:
        """(message, values) of the newest /diagnostics entry whose name ends with `suffix`."""
        with self._lock:
            for name, values in self.diag.items():
                if name.endswith(suffix):
                    return self.diag_msg.get(name, ""), dict(values)
        return "", {}

    def commands_since(self, t0: float) -> tuple[np.ndarray, np.ndarray]:
        """(arrival times, positions) of the commands received after monotonic time `t0`."""
        with self._lock:
            n = min(self.n_cmd, self.cmd_times.shape[0])
            start = self.n_cmd - n
            idx = (start + np.arange(n)) % self.cmd_times.shape[0]
            t, q = self.cmd_times[idx].copy(), self.cmd_q[idx].copy()
        keep = t > t0
        return t[keep], q[keep]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)

    def wait_diag_after(self, t: float, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.diag_stamp > t, timeout, "a /diagnostics message")

    def trigger(self, service: str, timeout: float = 10.0) -> Any:
        from std_srvs.srv import Trigger

        from diffusion_controller.service_client import call_service

        return call_service(self.node, Trigger, f"/{NODE}/{service}", Trigger.Request(), timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)
