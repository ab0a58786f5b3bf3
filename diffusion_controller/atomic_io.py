"""Atomic file writes that leave files readable like any other file the user writes.

`tempfile.mkstemp` creates its file with mode 0600 whatever the umask says, and a rename keeps
that mode: a model trained by one user would then be unreadable by the robot's service user, a
Docker volume or a teammate. This module writes through a temporary file in the destination's
folder (so the rename is atomic on the same filesystem) and gives it the mode a plain `open()`
would have given, 0666 less the umask (0644 under the default umask 022).
"""

from __future__ import annotations

import os
import tempfile
import threading

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else swapped."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` so readers see either the old file or the whole new one.

    `fsync` flushes the data to disk before the rename, for files whose loss after a power cut
    would cost a rebuild (engine caches) rather than a rerun.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
