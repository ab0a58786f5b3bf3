"""Helpers the ROS-tier tests share (importable as `node_helpers`: pytest's pythonpath is test/)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable


def sim_arm_command() -> list[str]:
    """How to start sim_arm: the installed console script, as `ros2 run` would, else the module."""
    exe = shutil.which("sim_arm")
    if exe is not None:
        return [exe]
    return [sys.executable, "-m", "diffusion_controller.sim.sim_node"]


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `pred` until it holds; a deadline for something to happen, not a timing assert."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
