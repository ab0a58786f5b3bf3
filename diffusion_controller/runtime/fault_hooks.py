"""TEST HOOK: artificial inference faults for the fault-injection tests and drills.

Off unless the environment variable DIFFUSION_CONTROLLER_FAULT_FILE names a file; nothing here
runs in a normal deployment beyond one `os.environ` lookup per inference. The file holds JSON, read
again whenever its modification time changes, so a test can start and stop a fault while the node
runs:

    {"delay_s": 3.0}          every inference first sleeps this long (a stalled backend)
    {"raise": "boom"}         every inference raises RuntimeError("injected fault: boom")
    {"nan": true}             the backend's actions come back as NaN
    {"exit": true}            the inference process exits at once (process mode only)

A missing, empty or unreadable file means no fault. The hook runs where the network runs: in the
inference thread (inference_mode thread) or in the inference process (inference_mode process).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

ENV = "DIFFUSION_CONTROLLER_FAULT_FILE"


@dataclass(frozen=True)
class Fault:
    delay_s: float = 0.0
    raise_msg: str = ""
    nan: bool = False
    exit: bool = False

    @property
    def any(self) -> bool:
        return bool(self.delay_s > 0 or self.raise_msg or self.nan or self.exit)


NONE = Fault()
_cache: dict[str, Any] = {"path": None, "mtime": None, "fault": NONE}


def current() -> Fault:
    """The fault configured now (NONE when the hook is off or the file is absent)."""
    path = os.environ.get(ENV)
    if not path:
        return NONE
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return NONE
    if _cache["path"] == path and _cache["mtime"] == mtime:
        return _cache["fault"]
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
        data = json.loads(text) if text else {}
        fault = Fault(delay_s=max(0.0, float(data.get("delay_s", 0.0))),
                      raise_msg=str(data.get("raise", "") or ""),
                      nan=bool(data.get("nan", False)), exit=bool(data.get("exit", False)))
    except (OSError, ValueError, TypeError, AttributeError):
        fault = NONE
    _cache.update(path=path, mtime=mtime, fault=fault)
    return fault


def before_inference() -> Fault:
    """Apply the delay and the exception of the current fault; the caller applies `nan`/`exit`."""
    fault = current()
    if fault.delay_s > 0:
        time.sleep(fault.delay_s)
    if fault.raise_msg:
        raise RuntimeError(f"injected fault: {fault.raise_msg}")
    return fault
