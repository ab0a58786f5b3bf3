"""What the controller core reports to its host: refused inputs and the status snapshot.

Apart from runtime/controller.py, which assembles the core: these are the only types a host's
diagnostics (ros/diagnostics.py, the node) read, and they hold values, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Refused:
    """An input the controller refused: which input, the counter's kind, the reason."""

    what: str
    kind: str
    reason: str


@dataclass(frozen=True)
class ControllerStatus:
    """What diagnostics need, read at one moment (every part is itself an immutable snapshot)."""

    loop: Any  # control.loop_status.LoopStatus
    worker: Any  # runtime.worker.WorkerStats
    worker_settings: Any  # runtime.worker.WorkerSettings in force
    backend: str
    backend_status: dict[str, Any] | None
    inference_mode: str
    chunk_timeout: float
    received: dict[str, int]
    rejected: dict[str, int]
    last_rejection: str
    input_ages: dict[str, float]
    loop_enabled: bool  # False once a deadman enable has lapsed
