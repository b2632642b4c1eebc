"""File modes that follow the user's umask, for workspaces several accounts share.

A workspace in a group folder (setgid, so new files take the folder's group)
is shared only if what we create is group-writable where the user's umask
allows it (002). Files made through `tempfile` are private (0600/0700) and
SQLite makes its database 0644 whatever the umask; the modes here are what
a plain `open()` / `mkdir()` would have given instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """This process's umask, read without changing it (Linux reports it in
    /proc; elsewhere it is set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `mkdir()` gives a new folder: 0777 less the umask."""
    return 0o777 & ~current_umask()
