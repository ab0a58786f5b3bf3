"""The controller's commands as messages: one Float64MultiArray per tick (`position`), or a
JointTrajectory stream (`trajectory`) every `stream_every`-th tick carrying the previous command,
this one and the filter's certified continuation, stamped `trajectory_lead` late.

Runs in the control loop thread (ControlLoop's output callback).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffusion_controller.control.types import Command
from diffusion_controller.ros import conversions as conv


class CommandOutput:
    """Publishes each command the loop hands over, in the configured interface."""

    def __init__(self, publisher: Any, interface: str, joint_names: Sequence[str],
                 rate_hz: float, stream_every: int, lead: float) -> None:
        self._pub = publisher
        self._position = interface == "position"
        self._names = list(joint_names)
        self._period = 1.0 / float(rate_hz)
        self._every = int(stream_every)
        self._lead = float(lead)
        self._tick = self._every - 1  # the first command goes out at once
        self._last: Command | None = None  # the previous command (the next message's start)

    def __call__(self, cmd: Command) -> None:
        if self._position:
            self._pub.publish(conv.position_command_msg(cmd))
            return
        previous, self._last = self._last, cmd
        self._tick += 1
        if self._tick < self._every:
            return
        self._tick = 0
        period = self._period
        if previous is not None and abs(cmd.stamp - previous.stamp - period) > 0.5 * period:
            previous = None  # not the tick before (a missed tick or a restart)
        self._pub.publish(conv.trajectory_stream_msg(cmd, self._names, period, self._lead,
                                                     previous))
