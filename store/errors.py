"""The store's one error hierarchy: callers catch `StoreError`."""


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class WorkspaceError(StoreError):
    """The workspace folder or its database cannot be used."""


class NotFound(StoreError):
    """A run, stage or other record that was asked for does not exist."""
