"""`~/set_parameters` served so that one request is one change.

rclpy's parameter service hands each parameter of a request to the on-set-parameters callbacks on
its own (Humble to Kilted), so `ros2 param load`, or a client setting [velocity_scale,
acceleration_scale] together, would be validated and applied piecemeal. The node's service is
replaced by one that sets the whole list atomically: validated as a set, applied whole or not at
all, every parameter answered with that one result.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter


def serve_set_parameters_as_one_request(node: Node, callback_group: Any = None) -> None:
    """Replace `node`'s ~/set_parameters service with the atomic one."""
    name = node.get_fully_qualified_name().strip("/") + "/set_parameters"
    for srv in list(node.services):
        if srv.srv_name.strip("/") == name:  # rclpy names it without the leading slash
            node.destroy_service(srv)

    def handle(req: Any, resp: Any) -> Any:
        try:
            plist = [Parameter.from_parameter_msg(p) for p in req.parameters]
            result = node.set_parameters_atomically(plist)
        except Exception as exc:  # e.g. a read-only or undeclared parameter
            result = SetParametersResult(successful=False, reason=str(exc))
        resp.results = [result for _ in req.parameters]
        return resp

    node.create_service(SetParameters, "~/set_parameters", handle, callback_group=callback_group)
