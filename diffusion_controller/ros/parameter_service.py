"""`~/set_parameters` served so that one request is one change.

rclpy's parameter service hands each parameter of a request to the on-set-parameters callbacks on
its own (Humble to Kilted), so `ros2 param load`, or a client setting [velocity_scale,
acceleration_scale] together, would be validated and applied piecemeal. The node's service is
replaced by one that sets the whole list atomically: validated as a set, applied whole or not at
all, every parameter answered with that one result.

`apply_parameter_request` is the on-set-parameters callback's work: the request is checked as a set
against the table (and the loaded model), its live part goes to the running core as one change
(Controller.apply_live, which refuses it whole with the reason), the rest is stored for the next
configure.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter

from diffusion_controller.ros import params


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


def apply_parameter_request(changed: list[Any], values: dict[str, Any],
                            facts: params.ModelFacts | None, core: Any, pending: set[str],
                            log: Any) -> SetParametersResult:
    """One request's parameters as one change; updates `values` and `pending` when accepted."""
    changes: dict[str, Any] = {}
    for p in changed:
        spec = params.SPECS.get(p.name)
        if spec is None:
            continue  # not ours (e.g. use_sim_time): rclpy handles it
        changes[p.name] = params.to_python(spec, p.value)
    if not changes:
        return SetParametersResult(successful=True)
    errors = params.check_update(values, changes, facts)
    if errors:
        reason = "; ".join(errors)
        log.warning(f"parameter change rejected: {reason}")
        return SetParametersResult(successful=False, reason=reason)
    live = {k: val for k, val in changes.items() if params.SPECS[k].live}
    deferred = sorted(k for k in changes if not params.SPECS[k].live)
    if core is not None and live:
        try:
            core.apply_live(live)
        except (ValueError, TypeError) as exc:
            reason = f"cannot apply {sorted(live)}: {exc}"
            log.warning(f"parameter change rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
    values.update(changes)
    notes = []
    if live and core is not None:
        notes.append(f"applied live: {', '.join(sorted(live))}")
    if deferred and core is not None:
        pending.update(deferred)
        notes.append(f"stored, takes effect on the next configure: {', '.join(deferred)}")
    if notes:
        log.info("; ".join(notes))
    return SetParametersResult(successful=True, reason="; ".join(notes))
