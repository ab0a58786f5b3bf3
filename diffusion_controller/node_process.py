"""A ROS node executable as a child process, its output in a log file (no ROS import here).

The evaluation, the benchmarks and the ROS tests all run the real `sim_arm` and `controller` nodes
as processes of their own, started with the current interpreter (`python -m <module> --ros-args
...`: the same entry point as the installed executables, and it works in a virtualenv, a pip
install and a colcon install alike), and stopped with SIGINT so the controller brakes and exits
cleanly (SIGKILL only if it has not within the grace period). Memory, CPU time and major page
faults come from /proc (Linux), for the benchmarks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SIM_MODULE = "diffusion_controller.sim.sim_node"
CONTROLLER_MODULE = "diffusion_controller.ros.controller_node"


def child_env(domain_id: int | None = None) -> dict[str, str]:
    """This process's environment for a node: unbuffered output (the log is read while it runs),
    one math thread unless set (the loop shares the CPU with inference), and `domain_id` as the
    DDS domain when given (otherwise the inherited one)."""
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def write_params_file(path: Path, values: Mapping[str, Any], node: str = "/**") -> Path:
    """A `--params-file` YAML giving `values` to `node` (default every node)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({node: {"ros__parameters": dict(values)}}), encoding="utf-8")
    return path


class NodeProcess:
    """`python -m <module> --ros-args <ros_args>` as a child process, its output in `log_path`.

    `env` is the child's whole environment (default `child_env()`); `name` is for messages
    (default the module's last part).
    """

    def __init__(
        self,
        module: str,
        ros_args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.argv = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env) if env is not None else child_env(),
            cwd=None if cwd is None else str(cwd),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process has written so far ("" if the file is gone)."""
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> int:
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
        return int(self.proc.returncode)

    # --- /proc readings (this process, or another `pid` such as its inference child) ----------
    def rss_mb(self, pid: int | None = None) -> float:
        """Resident memory (MiB), NaN when gone."""
        try:
            with open(f"/proc/{pid or self.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return float(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def cpu_s(self, pid: int | None = None) -> float:
        """User + system CPU seconds used so far, NaN when gone."""
        try:
            fields = _stat(pid or self.pid)
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def major_faults(self, pid: int | None = None) -> int:
        """Page faults that had to read from disk so far, -1 when gone."""
        try:
            return int(_stat(pid or self.pid)[9])
        except (OSError, IndexError, ValueError):
            return -1


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 onward)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[1].split()
