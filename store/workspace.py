"""A workspace: one folder holding the database and every artifact.

Resolution order: an explicit path (`--workspace DIR`), then the environment
variable `RLHF_WORKSPACE`, then `./rlhf-workspace`. Nothing is resolved at
import time, so tests and several workspaces in one process need no patching.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .db import HEAD_REVISION, MIN_FREE_BYTES, create_sqlite_engine, current_revision, migrate, writable
from .errors import WorkspaceError
from .permissions import file_mode
from .space_reserve import keep_space_reserve, release_space_reserve

if TYPE_CHECKING:
    from .repository import Store

ENV_VAR = "RLHF_WORKSPACE"
CACHE_ENV_VAR = "RLHF_CACHE_DIR"
DEFAULT_DIR = "rlhf-workspace"
DB_NAME = "rlhf.db"


def resolve_workspace_dir(path: str | os.PathLike[str] | None = None) -> Path:
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(path).expanduser().resolve()


class Workspace:
    """A workspace folder and its database.

    `store` (the ORM-backed `Store`) is made on first use: a database already
    at the newest revision is opened without importing SQLAlchemy, so a reader
    that needs only `store.reads` (the console's first screen) never pays for it.
    """

    def __init__(self, root: Path, store: Store | None = None, *, read_only: bool = False) -> None:
        self.root = root
        #: nothing can be written here (a read-only folder, or a full disk): reads work, writes fail
        self.read_only = read_only
        self._store = store
        self._store_lock = threading.Lock()  # the console's threads may ask for it at once

    def __repr__(self) -> str:
        return f"Workspace(root={self.root!r})"

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    from .repository import Store

                    self._store = Store(create_sqlite_engine(self.db_path, read_only=self.read_only))
        return self._store

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        """Built-in tokenizers and corpora, built once: per workspace, or shared
        by every workspace when RLHF_CACHE_DIR names a folder."""
        shared = os.environ.get(CACHE_ENV_VAR)
        return Path(shared).expanduser().resolve() if shared else self.root / "cache"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / f"{run_id:05d}"

    def stage_dir(self, run_id: int, stage_name: str) -> Path:
        return self.run_dir(run_id) / stage_name

    def keep_space_reserve(self) -> bool:
        """Set a few MiB aside for telling a full disk (store/space_reserve.py); False where there is no room."""
        return keep_space_reserve(self.root)

    def release_space_reserve(self) -> bool:
        """Free that room now, to record why the disk is full."""
        return release_space_reserve(self.root)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def why_not_writable(db_path: Path) -> str:
    """Why a workspace was opened for reading only, in a few words."""
    try:
        if shutil.disk_usage(db_path.parent).free < MIN_FREE_BYTES:
            return f"no space left on device at {db_path.parent}"
    except OSError:
        pass
    return "the workspace is read-only for this user"


def _share_like_the_folder(db_path: Path) -> None:
    """SQLite makes a new database 0644 whatever the umask; give it (and its
    -wal and -shm, which later take its mode) what the umask allows, so people
    on other accounts in a group-shared workspace (umask 002) can rank too."""
    for path in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
        with contextlib.suppress(OSError):
            path.chmod(file_mode())


def open_workspace(path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Workspace:
    """Open (and by default create) a workspace, migrating its database."""
    root = resolve_workspace_dir(path)
    db_path = root / DB_NAME
    if not db_path.exists():
        if not create:
            raise WorkspaceError(f"{root}: no workspace here (no {DB_NAME})")
        if root.exists() and not root.is_dir():
            raise WorkspaceError(f"{root}: exists and is not a folder")
        if not root.parent.is_dir():
            # A typo in RLHF_WORKSPACE or -w would otherwise make a fresh, empty workspace that looks like
            # every run was lost; only the workspace folder itself is ever created.
            raise WorkspaceError(f"{root}: no such folder as {root.parent} to make the workspace in; "
                                 "create it first, or check the path (-w / RLHF_WORKSPACE)")
        try:
            root.mkdir(exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"{root}: cannot create workspace folder ({exc.strerror})") from exc
    if db_path.exists() and not writable(db_path):
        # A read-only workspace (another user's, a read-only mount) or a full disk: still readable.
        revision = current_revision(db_path, read_only=True)
        if revision != HEAD_REVISION:
            raise WorkspaceError(f"{db_path}: cannot be upgraded to this rlhf-console's schema "
                                 f"({why_not_writable(db_path)}); it is at revision {revision!r}")
        return Workspace(root=root, read_only=True)
    if current_revision(db_path) == HEAD_REVISION:
        return Workspace(root=root)  # nothing to migrate: the ORM waits until something needs it
    fresh = not db_path.exists()
    engine = create_sqlite_engine(db_path)
    try:
        migrate(engine, db_path)
    except Exception as exc:
        engine.dispose()
        if isinstance(exc, WorkspaceError):
            raise
        raise WorkspaceError(f"{db_path}: cannot open or migrate the database ({exc})") from exc
    if fresh:
        _share_like_the_folder(db_path)
    from .repository import Store

    return Workspace(root=root, store=Store(engine))
