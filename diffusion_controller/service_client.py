"""One way to call a ROS 2 service from a node that another thread spins.

The evaluation client, the benches and the ROS tests all run their node in an executor on a
background thread, so a call here never spins: it waits for the server, sends the request and
polls the future until the reply arrives or the timeout passes. Duck-typed on rclpy's Node and
Client, so this module imports nothing from ROS itself.
"""

from __future__ import annotations

import time
from typing import Any


class ServiceUnavailableError(TimeoutError):
    """No server answered the discovery of the service in time."""


class ServiceTimeoutError(TimeoutError):
    """The server was found but did not reply in time (the pending request is dropped)."""


class ServiceCallError(RuntimeError):
    """The call ended without a reply (raised only when the caller requires one)."""


def call_service(
    node: Any,
    srv_type: Any,
    name: str,
    request: Any,
    timeout: float = 10.0,
    *,
    client: Any = None,
    discovery_timeout: float | None = None,
    poll_s: float = 0.005,
    require_reply: bool = False,
) -> Any:
    """Call service `name` and return the reply.

    None when the call ended without one (see the future's exception); ServiceCallError
    instead with `require_reply`. `client`: a client the caller keeps for repeated calls;
    without one, a client is made for this call and destroyed after it. `discovery_timeout`
    (default: `timeout`) bounds the wait for the server, `timeout` the wait for the reply.
    """
    own = client is None
    if own:
        client = node.create_client(srv_type, name)
    try:
        wait = timeout if discovery_timeout is None else discovery_timeout
        if not client.wait_for_service(timeout_sec=wait):
            raise ServiceUnavailableError(f"service {name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                cancel = getattr(client, "remove_pending_request", None)
                if cancel is not None:
                    cancel(future)
                raise ServiceTimeoutError(f"service {name} did not answer within {timeout:g} s")
            time.sleep(poll_s)
        result = future.result()
        if result is None and require_reply:
            raise ServiceCallError(f"service {name} failed: {future.exception()!r}")
        return result
    finally:
        if own:
            node.destroy_client(client)
