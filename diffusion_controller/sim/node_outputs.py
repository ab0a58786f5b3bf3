"""sim_arm's outputs: camera frames and the /sim/contacts verdict reports.

A mixin of SimArmNode (kept apart so sim_node.py stays readable, as node_robot.py is): rendering a
frame through the sensor perturbations (drop, delay) and publishing it as rgb8, and the JSON
report eval reads each episode's verdict from (contacts, clearance, the task monitor's outcome and
label, the robot side's reflexes). See sim_node's module docstring for the topics.
"""

from __future__ import annotations

import array
import json
import math
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import String


class SimOutputsMixin:
    """Camera and contacts publishing, on SimArmNode's world, monitor, perturber, publishers."""

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
            header=header_at(stamp, self.frame_id),
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
            "label": getattr(out, "label", None),
            "cube": getattr(out, "cube", None),
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


def header_at(stamp: Any, frame_id: str) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id=frame_id)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
