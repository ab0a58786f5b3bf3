"""Real-time scheduling for the threads that share the control loop's GIL.

SCHED_FIFO makes the loop thread wake on time (measured on the 2-core test machine under load:
wake-up error max 0.3 ms with it, 14 ms without), but in CPython the loop must then take the GIL,
and if the thread holding it is an ordinary (SCHED_OTHER) thread, the kernel may have preempted
that thread in favour of some unrelated busy process: the loop then waits a whole CFS time slice
(several ms) for a thread that is not even running. This is priority inversion through the GIL.
The cure is to run every Python thread of the node's process (executor, inference worker, main) at
a real-time priority just below the loop's, so whoever holds the GIL keeps its CPU until it
reaches the next switch point (at most `sys.getswitchinterval()` of Python work). The network
itself runs in the inference process at normal priority and never holds this GIL.

Everything here is best effort: where the OS refuses (no CAP_SYS_NICE, no rtprio limit, not
Linux), the reason is returned for /diagnostics and nothing else changes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any


def set_fifo(native_id: int, priority: int) -> str | None:
    """SCHED_FIFO at `priority` for the thread with kernel id `native_id` (0: the calling
    thread); the reason when refused, else None."""
    try:
        os.sched_setscheduler(int(native_id), os.SCHED_FIFO, os.sched_param(int(priority)))
    except (AttributeError, OSError, ValueError) as exc:
        return f"SCHED_FIFO {priority} for thread {native_id}: {exc}"
    return None


def set_other(native_id: int) -> str | None:
    """Back to SCHED_OTHER (the default policy)."""
    try:
        os.sched_setscheduler(int(native_id), os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError, ValueError) as exc:
        return f"SCHED_OTHER for thread {native_id}: {exc}"
    return None


def policy_of(native_id: int) -> str:
    try:
        pol = os.sched_getscheduler(int(native_id))
        prio = os.sched_getparam(int(native_id)).sched_priority
    except (AttributeError, OSError):
        return "unknown"
    name = {getattr(os, "SCHED_FIFO", -1): "fifo", getattr(os, "SCHED_RR", -2): "rr",
            getattr(os, "SCHED_OTHER", -3): "other"}.get(pol, str(pol))
    return f"{name}:{prio}" if name in ("fifo", "rr") else name


def raise_python_threads(priority: int, exclude: tuple[str, ...] = ("control-loop",)
                         ) -> dict[str, Any]:
    """SCHED_FIFO `priority` for every live Python thread except those named in `exclude`.

    Threads started later (the inference worker) call `set_fifo(0, priority)` themselves."""
    granted: dict[str, str] = {}
    errors: list[str] = []
    for t in threading.enumerate():
        if t.name in exclude or t.native_id is None:
            continue
        err = set_fifo(t.native_id, priority)
        if err:
            errors.append(f"{t.name}: {err}")
        granted[t.name] = policy_of(t.native_id)
    return {"threads": granted, "errors": errors}


def lower_python_threads(exclude: tuple[str, ...] = ("control-loop",)) -> None:
    """Undo `raise_python_threads` (realtime switched off at a reconfigure)."""
    for t in threading.enumerate():
        if t.name not in exclude and t.native_id is not None:
            set_other(t.native_id)


def wakeup_jitter(duration_s: float, rate_hz: float = 100.0, priority: int | None = 80,
                  spin_s: float = 0.0005) -> dict[str, Any]:
    """The platform's floor: a bare thread (SCHED_FIFO `priority` if granted, None: default
    policy) waking on absolute deadlines at `rate_hz` with the control loop's sleep-then-spin,
    in a process doing nothing else. Lateness percentiles in ms; what the OS and the machine
    (a VM's stolen time included) add before any Python contention."""
    import time

    import numpy as np

    from diffusion_controller.control.ticker import sleep_until

    out: dict[str, Any] = {}

    def run() -> None:
        out["sched_fifo"] = priority is not None and set_fifo(0, priority) is None
        period = 1.0 / rate_hz
        n = max(1, int(duration_s * rate_hz))
        late = np.empty(n)
        start = time.monotonic()
        for k in range(n):
            deadline = start + k * period
            sleep_until(deadline, spin_s)
            late[k] = time.monotonic() - deadline
        ms = late * 1e3
        out.update(n=n, p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)),
                   p999_ms=float(np.percentile(ms, 99.9)), max_ms=float(np.max(ms)),
                   over_1ms=int(np.count_nonzero(ms > 1.0)))

    t = threading.Thread(target=run, name="jitter-baseline", daemon=True)
    t.start()
    t.join()
    return out


_MCL_CURRENT, _MCL_FUTURE, _MCL_ONFAULT = 1, 2, 4


def lock_memory() -> str | None:
    """Keep the process's pages in RAM (mlockall with MCL_ONFAULT: pages already resident and
    every page touched from now on; untouched reservations such as thread stacks stay unpopulated).

    Without it the kernel may page out rarely used but mapped pages (shared-library and module
    code) under memory pressure or proactive reclaim, and the next use of them is a major page
    fault from disk in the middle of a tick (measured on the 2-core test VM, whose kernel pages
    out cold pages proactively: a 99 ms stall in a 10-minute run). Needs CAP_IPC_LOCK or a
    sufficient RLIMIT_MEMLOCK ("memlock unlimited" in limits.conf); returns the reason when
    refused."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError as exc:
        return f"mlockall: no libc ({exc})"
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE | _MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        return f"mlockall: {os.strerror(err)} (errno {err})"
    return None


def unlock_memory() -> None:
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").munlockall()
