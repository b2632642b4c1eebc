"""A few MiB set aside in each workspace so that a full disk can still be told.

When a stage fills the disk, the store lives on that same disk: SQLite
cannot append the page that records "failed: no space left on device", the
run process dies next, and all that is left afterwards is "its run process
died". So a run process sets aside RESERVE_BYTES as a real (allocated, not
sparse) file before its stages start, and the process that meets a full disk
deletes it, which gives the store room to record why and the run process
room to finish the run. The next run sets it aside again, where there is room.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

RESERVE_NAME = ".space-reserve"
#: room for the failure's rows and log lines, the run's status, and SQLite's -wal pages for them
RESERVE_BYTES = 4 << 20


def keep_space_reserve(workspace_root: Path) -> bool:
    """Set the reserve aside if it is not there yet; False where the disk has no room for it."""
    path = workspace_root / RESERVE_NAME
    if path.is_file() and path.stat().st_size >= RESERVE_BYTES:
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            # Allocated blocks, unlike a sparse file of that size: deleting it frees real room.
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()  # a part of it would only eat what little room is left
        return False
    return True


def release_space_reserve(workspace_root: Path) -> bool:
    """Free the reserve for the writes that tell why the disk is full; False if there was none."""
    try:
        (workspace_root / RESERVE_NAME).unlink()
    except OSError:
        return False
    return True


__all__ = ["RESERVE_BYTES", "RESERVE_NAME", "keep_space_reserve", "release_space_reserve"]
