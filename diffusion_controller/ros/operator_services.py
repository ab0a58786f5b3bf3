"""The operator's services: ~/enable, ~/estop, ~/reset, ~/reset_statistics.

The operator's state (enabled, e-stop latched) belongs to the node's whole life, not to one
configured core: an e-stop latched before a reconfigure is still latched after it, and an enable
given while inactive applies on activate. The services pass it through to the core when there is
one running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from std_srvs.srv import SetBool, Trigger


class OperatorServices:
    """Enable / e-stop / reset state and the services that change it."""

    def __init__(self, node: Any, callback_group: Any, start_enabled: bool,
                 core: Callable[[], Any], active: Callable[[], bool],
                 enable_timeout: Callable[[], float],
                 on_reset_statistics: Callable[[], None]) -> None:
        self.enabled = bool(start_enabled)
        self.estop_latched = False
        self._node = node
        self._core = core
        self._active = active
        self._enable_timeout = enable_timeout
        self._on_reset_statistics = on_reset_statistics
        for srv, name, cb in ((SetBool, "~/enable", self._srv_enable),
                              (Trigger, "~/estop", self._srv_estop),
                              (Trigger, "~/reset", self._srv_reset),
                              (Trigger, "~/reset_statistics", self._srv_reset_statistics)):
            node.create_service(srv, name, cb, callback_group=callback_group)

    def _srv_enable(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        if req.data and self.estop_latched:
            resp.success = False
            resp.message = "e-stop latched: call ~/reset first (the arm must be at rest)"
            return resp
        self.enabled = bool(req.data)
        core = self._core()
        timeout = float(self._enable_timeout())
        resp.success = True
        if core is not None and self._active():
            core.enable(self.enabled, timeout)
            if self.enabled and timeout > 0:
                resp.message = (f"enabled for {timeout:g} s (enable_timeout): renew with "
                                "~/enable true")
                return resp
            resp.message = "enabled" if self.enabled else "disabled: braking to a stop"
        else:
            resp.message = f"{'enabled' if self.enabled else 'disabled'} (applies on activate)"
        return resp

    def _srv_estop(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.estop_latched = True
        core = self._core()
        if core is not None:
            core.estop()
        # The node-clock time of latching lets a caller tell its own call latency from the stop.
        stamp = self._node.get_clock().now().nanoseconds * 1e-9
        self._node.get_logger().warning("e-stop latched: braking to a stop; ~/reset clears it")
        resp.success = True
        resp.message = f"e-stop latched at {stamp:.6f} s (node clock)"
        return resp

    def _srv_reset(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        core = self._core()
        if core is None:
            ok, msg = True, "e-stop cleared" if self.estop_latched else "nothing to reset"
        else:
            ok, msg = core.reset()
        if ok:
            self.estop_latched = False
        resp.success = bool(ok)
        resp.message = msg
        return resp

    def _srv_reset_statistics(self, req: Trigger.Request,
                              resp: Trigger.Response) -> Trigger.Response:
        core = self._core()
        if core is None:
            resp.success, resp.message = False, "not configured"
            return resp
        core.reset_statistics()
        self._on_reset_statistics()
        resp.success, resp.message = True, "whole-run timing statistics restarted"
        return resp
