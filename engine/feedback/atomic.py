"""Atomic file writes: an export either lands whole or not at all.

The data goes to a temporary file in the target's own folder (so the final
rename never crosses a file system) and `os.replace` puts it in place in one
step; on any error the temporary file is removed, and a file that was already
at the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.errors import UserInputError
from store.permissions import file_mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces `path`.

    The new file keeps the mode of the file it replaces, or gets what `open()`
    would give it under the user's umask (a temporary file is created 0600,
    which would hide an export from others)."""
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise UserInputError(f"{target}: no folder {target.parent}; expected an existing folder")
    if target.is_dir():
        raise UserInputError(f"{target}: is a folder; expected a file name")
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else file_mode()
        os.chmod(temporary, mode)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
