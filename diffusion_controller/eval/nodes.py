"""The processes and the client node of an evaluation run: `EvalNodes` starts the evaluation's
own rclpy node (in a context and an executor thread of its own, on the run's DDS domain), the
`sim_arm` process and the controller processes, waits until each is ready, and stops them all.

Kept apart from the episode loop (eval/runner.py), which only calls these: a node that dies or
never comes up is an EvalError with the tail of its log, whatever the loop was doing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from diffusion_controller.node_process import (
    CONTROLLER_MODULE,
    SIM_MODULE,
    NodeProcess,
    write_params_file,
)

SIM_STARTUP_S = 60.0  # a cold sim_arm (pybullet, the URDF, the first render) is up within this


class EvalNodes:
    """The run's node processes and its client node; `close` stops everything it started."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.context: Any = None
        self.client: Any = None
        self.executor: Any = None
        self.spin_thread: threading.Thread | None = None

    def start_ros(self, domain_id: int) -> None:
        """The evaluation's client node, spun in a thread of its own on `domain_id`."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from diffusion_controller.eval.client import EvalClient

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.client = EvalClient(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.client)
        self.spin_thread = threading.Thread(target=self._spin, name="eval-executor", daemon=True)
        self.spin_thread.start()

    def _spin(self) -> None:
        import contextlib

        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def close(self) -> None:
        import rclpy

        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
        if self.client is not None:
            self.client.destroy_node()
        if self.context is not None:
            rclpy.try_shutdown(context=self.context)
        if self.spin_thread is not None:
            self.spin_thread.join(timeout=2.0)

    def start_sim(self, logs: Path, env: dict[str, str], params: dict[str, Any]) -> NodeProcess:
        """sim_arm with `params`; returns once its /robot_description has arrived."""
        from diffusion_controller.eval.client import EvalError

        path = write_params_file(logs / "sim_params.yaml", params, node="/sim_arm")
        proc = NodeProcess(
            SIM_MODULE, ["--params-file", str(path)], logs / "sim_arm.log", env, name="sim_arm"
        )
        self.procs.append(proc)
        deadline = time.monotonic() + SIM_STARTUP_S
        while self.client.urdf is None:
            if not proc.alive:
                raise EvalError(f"sim_arm exited (code {proc.proc.returncode}):\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise EvalError(
                    f"no /robot_description from sim_arm within {SIM_STARTUP_S:g} s:\n"
                    f"{proc.log_tail()}"
                )
            time.sleep(0.05)
        return proc

    def start_controller(
        self,
        name: str,
        params_file: Path,
        logs: Path,
        env: dict[str, str],
        startup_timeout: float,
    ) -> NodeProcess:
        """The controller process of policy `name`; returns once it is active (model loaded and
        warmed up), or raises EvalError with its configure failure or its log."""
        from diffusion_controller.eval.client import ACTIVE, EvalError

        proc = NodeProcess(
            CONTROLLER_MODULE,
            ["--params-file", str(params_file)],
            logs / f"controller_{name}.log",
            env,
            name=f"controller_{name}",
        )
        self.procs.append(proc)
        self.client.node_message = ""
        deadline = time.monotonic() + startup_timeout
        while True:
            if not proc.alive:
                raise EvalError(
                    f"the {name} controller exited (code {proc.proc.returncode}):\n"
                    f"{proc.log_tail()}"
                )
            msg = self.client.node_message
            if msg.startswith("configure failed"):
                raise EvalError(f"the {name} controller did not configure: {msg}")
            try:
                if self.client.lifecycle_state(timeout=1.0) == ACTIVE:
                    return proc
            except EvalError:
                pass  # not up yet
            if time.monotonic() > deadline:
                raise EvalError(
                    f"the {name} controller was not active after "
                    f"{startup_timeout:g} s:\n{proc.log_tail()}"
                )
            time.sleep(0.2)

    def stop_proc(self, proc: Any) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)
