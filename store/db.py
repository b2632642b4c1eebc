"""Opening the SQLite database: pragmas, and migrations applied on open.

SQLite runs in WAL mode so the console and CLI can read while stage workers
write, with a busy timeout so concurrent writers wait instead of failing.
Migrations are Alembic's; to keep `rlhf` start-up fast, Alembic is imported
only when the database is not already at the newest revision, and SQLAlchemy
only when an engine is made (`current_revision` is plain sqlite3).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import WorkspaceError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

# The newest migration in store/migrations/versions. A test checks that this
# equals Alembic's head, so forgetting to bump it fails CI.
HEAD_REVISION = "0006"

BUSY_TIMEOUT_MS = 30_000
#: below this much free disk a workspace is opened for reading only (SQLite's -wal and -shm need room)
MIN_FREE_BYTES = 1 << 20
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL mode (persistent, so usually already done).

    The switch needs an exclusive lock, and SQLite can answer it with
    SQLITE_BUSY at once, without calling the busy handler, while another
    process is creating or recovering the same fresh database. So we retry
    until the busy timeout is spent instead of failing the first opener that
    loses the race.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _set_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    # NORMAL is durable across process crashes in WAL mode (only a power loss
    # can drop the last transactions), and much faster than FULL.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _set_read_only_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def read_only_uri(db_path: Path) -> str:
    """SQLite's URI for reading `db_path` where nothing may be written: a
    read-only folder or file, or a full disk. `immutable` skips the locks and
    the WAL index (-shm) a normal reader must create; it is right only while
    no other process writes, which on such a workspace none can."""
    return f"file:{quote(str(db_path))}?mode=ro&immutable=1"


def create_sqlite_engine(db_path: Path, *, read_only: bool = False) -> Engine:
    from sqlalchemy import create_engine, event

    if read_only:
        engine = create_engine(
            f"sqlite:///{read_only_uri(db_path)}&uri=true",
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _set_read_only_pragmas)
        return engine
    engine = create_engine(
        f"sqlite:///{db_path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _set_pragmas)
    return engine


def writable(db_path: Path) -> bool:
    """Whether this process can write the database: its folder and file are
    writable and the disk has room (SQLite needs some for its -wal and -shm)."""
    folder = db_path.parent
    if not os.access(folder, os.W_OK) or (db_path.exists() and not os.access(db_path, os.W_OK)):
        return False
    try:
        return shutil.disk_usage(folder).free >= MIN_FREE_BYTES
    except OSError:
        return False


def current_revision(db_path: Path, *, read_only: bool = False) -> str | None:
    """The Alembic revision a database file is at, read without Alembic."""
    if not db_path.exists():
        return None
    try:
        con = (sqlite3.connect(read_only_uri(db_path), uri=True, timeout=BUSY_TIMEOUT_MS / 1000) if read_only
               else sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000))
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return None  # empty file or no alembic_version table yet
    except sqlite3.DatabaseError as exc:
        raise WorkspaceError(f"{db_path}: not an rlhf-console database ({exc})") from exc
    return row[0] if row else None


def alembic_config(db_path: Path) -> Config:  # alembic imported lazily: only migrations need it
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{db_path}")
    return config


def migrate(engine: Engine, db_path: Path) -> None:
    """Bring the database to the newest revision (creating it if needed)."""
    if current_revision(db_path) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.util import CommandError

    config = alembic_config(db_path)
    with engine.connect() as connection:
        # pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so
        # Alembic's CREATE TABLEs would each commit on their own: two first
        # openers would both create tables, and a crash would leave half a
        # schema. Take SQLite's write lock first: concurrent openers wait here
        # (busy_timeout), the migration is atomic, and Alembic, reading the
        # revision inside the lock, finds nothing left to do for the second.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection  # env.py migrates through it
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            if "Can't locate revision" in str(exc):
                raise WorkspaceError(
                    f"{db_path}: made by a newer rlhf-console (revision {current_revision(db_path)!r}); "
                    "upgrade rlhf-console to open it"
                ) from exc
            raise
        connection.commit()
