"""The simulator and the controller as processes of their own, with their output in log files.

Each is started with the current interpreter (`python -m <module>`: the same entry point as the
`sim_arm` and `controller` executables, and it works in a virtualenv, a pip install and a colcon
install alike), in the evaluation's own DDS domain, and stopped with SIGINT so the controller
brakes and exits cleanly (SIGKILL only if it does not within the grace period).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SIM_MODULE = "diffusion_controller.sim.sim_node"
CONTROLLER_MODULE = "diffusion_controller.ros.controller_node"


class NodeProcess:
    """One ROS node executable as a child process."""

    def __init__(
        self,
        name: str,
        module: str,
        ros_args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.argv = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGINT, wait `grace` s, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


def child_env(domain_id: int) -> dict[str, str]:
    """The environment of the nodes: our DDS domain, unbuffered output, one math thread."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
