"""Where the controller's URDF comes from: `urdf_path`, or the latched robot description topic.

Configure runs in an executor callback of a single-threaded executor (a multi-threaded one costs
the control loop its timing through the GIL), so it cannot wait for one of the node's own
subscriptions; a helper node with an executor of its own is spun in place for a bounded time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from diffusion_controller.runtime.controller import BuildError


def read_urdf(node: Node, values: Mapping[str, Any]) -> str:
    """The URDF text; BuildError (the operator's reason) when there is none."""
    path = str(values["urdf_path"])
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            raise BuildError(f"urdf_path '{path}' cannot be read: {exc}") from exc
    topic = str(values["robot_description_topic"])
    timeout = float(values["robot_description_timeout"])
    text = wait_for_urdf(node, topic, timeout)
    if text is None:
        raise BuildError(
            f"no URDF: nothing received on {topic} within {timeout:g} s and urdf_path is empty")
    return text


def wait_for_urdf(node: Node, topic: str, timeout: float) -> str | None:
    """The newest non-empty message on the latched `topic` within `timeout` s, else None."""
    received: list[str] = []
    qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    # The helper takes no global arguments: under `ros2 launch` they carry `__node:=<our name>`,
    # which would give it the controller's name (a clash, and /rosout lost for the controller
    # when it is destroyed). The topic is resolved here, through the controller's namespace and
    # remaps, so a remap of the URDF topic still applies.
    resolve = getattr(node, "resolve_topic_name", None)
    resolved = resolve(topic) if resolve is not None else topic
    helper = Node(f"{node.get_name()}_urdf_reader", namespace=node.get_namespace(),
                  context=node.context, use_global_arguments=False, enable_rosout=False,
                  start_parameter_services=False)
    helper.create_subscription(
        String, resolved, lambda m: received.append(m.data) if m.data.strip() else None, qos)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(helper)
    deadline = time.monotonic() + timeout
    try:
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))
    finally:
        executor.shutdown(timeout_sec=0.5)
        helper.destroy_node()
    return received[-1] if received else None
