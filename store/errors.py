"""The store's one error hierarchy: callers catch `StoreError`."""


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class WorkspaceError(StoreError):
    """The workspace folder or its database cannot be used."""


class NotFound(StoreError):
    """A run, stage or other record that was asked for does not exist."""


def is_busy(error: BaseException) -> bool:
    """Whether `error` is SQLite saying another connection holds the write lock
    (`database is locked`, SQLITE_BUSY) after the busy timeout ran out: a
    reason to wait and write again, not a fault of the data."""
    seen: BaseException | None = error
    while seen is not None:
        message = str(getattr(seen, "orig", None) or seen)
        if type(seen).__name__ == "OperationalError" and ("database is locked" in message or "busy" in message):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_read_only(error: BaseException) -> bool:
    """Whether `error` is SQLite refusing a write to a database opened for
    reading only (a read-only workspace, or one on a full disk)."""
    seen: BaseException | None = error
    while seen is not None:
        if "attempt to write a readonly database" in str(getattr(seen, "orig", None) or seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
