"""Telling a full disk from other failures, in the words a user acts on.

A full disk reaches a stage in many shapes: an OSError with errno ENOSPC
(and, usually, the file's name), safetensors' "IoError(Os { code: 28 ...})",
torch.save's "file write failed", SQLite's "database or disk is full". The
first two say so; the last two say so only with the disk's free space read
beside them.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from store.db import MIN_FREE_BYTES

_SAID_BY_LIBRARIES = ("no space left on device", "os error 28", "code: 28", "storagefull", "disk is full")


def no_space_message(error: BaseException, folder: Path) -> str | None:
    """'no space left on device: PATH' when `error` (or what caused it) is a full
    disk, PATH the file being written if known, else `folder`; None otherwise."""
    seen: set[int] = set()
    cause: BaseException | None = error
    said = False
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return f"no space left on device: {cause.filename or folder}"
        said = said or any(words in str(cause).lower() for words in _SAID_BY_LIBRARIES)
        cause = cause.__cause__ or cause.__context__
    if said or _nearly_full(folder):
        # The library's own words follow: they may name the file the path above cannot.
        return f"no space left on device: {folder} ({type(error).__name__}: {str(error)[:300]})"
    return None


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < MIN_FREE_BYTES
    except OSError:
        return False


__all__ = ["no_space_message"]
