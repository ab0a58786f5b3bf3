"""node_process on its own: a real child process (a tiny module standing in for a node), its
log, the SIGINT stop and the SIGKILL fallback, the /proc readings, the environment and the
parameter file."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from diffusion_controller.node_process import NodeProcess, child_env, write_params_file

# Prints its arguments, then waits; exits 0 on SIGINT (as the nodes do, which install their own
# handlers: a child of a background shell job inherits SIGINT ignored), or ignores it.
NODE_SOURCE = """
import signal, sys, time
print("args", sys.argv[1:], flush=True)
if "--ignore-sigint" in sys.argv:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.fixture
def fake_node(tmp_path: Path) -> Path:
    (tmp_path / "fake_node.py").write_text(NODE_SOURCE, encoding="utf-8")
    return tmp_path


def _wait_for(proc: NodeProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        assert proc.alive, proc.log()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{proc.log()}"
        time.sleep(0.02)


def test_sigint_stop_log_and_proc_readings(fake_node: Path) -> None:
    proc = NodeProcess("fake_node", ["-p", "x:=1"], fake_node / "logs" / "n.log", cwd=fake_node)
    try:
        assert proc.name == "fake_node"
        assert proc.argv[:3] == [sys.executable, "-m", "fake_node"]
        _wait_for(proc, "ready")
        assert "['--ros-args', '-p', 'x:=1']" in proc.log()
        assert proc.rss_mb() > 1.0
        assert proc.cpu_s() >= 0.0
        assert proc.major_faults() >= 0
    finally:
        code = proc.stop(grace=10.0)
    assert code == 0
    assert not proc.alive
    assert proc.log_tail(1) == "interrupted"
    # Gone: the readings say so instead of raising.
    assert math.isnan(proc.rss_mb()) and math.isnan(proc.cpu_s()) and proc.major_faults() == -1


def test_sigkill_when_sigint_is_ignored(fake_node: Path) -> None:
    proc = NodeProcess("fake_node", ["--ignore-sigint"], fake_node / "n.log", cwd=fake_node)
    try:
        _wait_for(proc, "ready")
    finally:
        code = proc.stop(grace=0.3)
    assert code == -9
    assert "interrupted" not in proc.log()


def test_child_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = child_env()
    assert env["ROS_DOMAIN_ID"] == "7" and env["PYTHONUNBUFFERED"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = child_env(42)
    assert env["ROS_DOMAIN_ID"] == "42" and env["OMP_NUM_THREADS"] == "3"
    assert os.environ["ROS_DOMAIN_ID"] == "7"  # ours is left alone


def test_write_params_file(tmp_path: Path) -> None:
    path = write_params_file(tmp_path / "a" / "p.yaml", {"rate": 10.0, "names": ["j1"]})
    assert yaml.safe_load(path.read_text()) == {
        "/**": {"ros__parameters": {"rate": 10.0, "names": ["j1"]}}
    }
    path = write_params_file(tmp_path / "q.yaml", {"seed": 3}, node="/sim_arm")
    assert yaml.safe_load(path.read_text()) == {"/sim_arm": {"ros__parameters": {"seed": 3}}}
