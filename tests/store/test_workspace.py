"""Workspace resolution, SQLite settings, and databases that cannot be used."""

from __future__ import annotations

import pytest

from store import ENV_VAR, StoreError, WorkspaceError, open_workspace, resolve_workspace_dir
from store.db import BUSY_TIMEOUT_MS


def pragma(store, name):
    with store.engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_wal_mode_and_busy_timeout(workspace):
    store = workspace.store
    assert pragma(store, "journal_mode") == "wal"
    assert pragma(store, "busy_timeout") == BUSY_TIMEOUT_MS >= 5000
    assert pragma(store, "foreign_keys") == 1
    assert pragma(store, "synchronous") == 1  # NORMAL


def test_explicit_path_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert resolve_workspace_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace_dir() == tmp_path / "from-env"
    ws = open_workspace()
    ws.close()
    assert ws.root == tmp_path / "from-env"
    assert (tmp_path / "from-env" / "rlhf.db").is_file()


def test_default_is_rlhf_workspace_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace_dir() == tmp_path / "rlhf-workspace"
    monkeypatch.setenv(ENV_VAR, "")  # empty means unset
    assert resolve_workspace_dir() == tmp_path / "rlhf-workspace"


def test_relative_and_home_paths_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_workspace_dir("ws") == tmp_path / "ws"
    assert resolve_workspace_dir("~/ws") == tmp_path / "home" / "ws"
    monkeypatch.setenv(ENV_VAR, "rel")
    assert resolve_workspace_dir() == tmp_path / "rel"


def test_resolution_happens_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "a"))
    first = resolve_workspace_dir()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "b"))
    assert (first, resolve_workspace_dir()) == (tmp_path / "a", tmp_path / "b")


def test_folders(workspace):
    root = workspace.root
    assert workspace.runs_dir == root / "runs"
    assert workspace.cache_dir == root / "cache"
    assert workspace.locks_dir == root / "locks"
    assert workspace.run_dir(7) == root / "runs" / "00007"
    assert workspace.stage_dir(7, "sft") == root / "runs" / "00007" / "sft"


def test_corrupt_database_names_the_file(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    db = root / "rlhf.db"
    db.write_bytes(b"this is not a database, just garbage bytes \x00\xff" * 200)
    with pytest.raises(WorkspaceError) as info:
        open_workspace(root)
    assert str(db) in str(info.value)
    assert isinstance(info.value, StoreError)
    assert db.read_bytes().startswith(b"this is not a database")  # left untouched


def test_open_without_create(tmp_path):
    with pytest.raises(WorkspaceError, match="no workspace here"):
        open_workspace(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    open_workspace(tmp_path / "ws").close()
    open_workspace(tmp_path / "ws", create=False).close()


def test_workspace_path_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkspaceError, match="not a folder") as info:
        open_workspace(tmp_path / "file")
    assert str(tmp_path / "file") in str(info.value)


def test_a_workspace_is_made_only_where_its_parent_exists(tmp_path) -> None:
    # A typo in RLHF_WORKSPACE must not make a fresh, empty workspace that looks like lost runs.
    with pytest.raises(WorkspaceError, match=r"no such folder as .*typo to make the workspace in"):
        open_workspace(tmp_path / "typo" / "ws")
    assert not (tmp_path / "typo").exists()
    open_workspace(tmp_path / "ws").close()  # the folder itself is made
    assert (tmp_path / "ws" / "rlhf.db").is_file()


def test_a_group_shared_workspace_is_writable_by_the_group(tmp_path) -> None:
    # umask 002, as people sharing a group folder set it: what we create is group-writable.
    import os
    import stat

    from engine.feedback.atomic import atomic_path

    old = os.umask(0o002)
    try:
        ws = open_workspace(tmp_path / "shared")
        ws.store.create_run(name="r", spec_text="", spec={}, spec_path=None, stages=[])
        with atomic_path(tmp_path / "shared" / "export.jsonl") as path:
            path.write_text("{}\n")
        ws.close()
    finally:
        os.umask(old)
    for name in ("rlhf.db", "export.jsonl"):
        assert stat.S_IMODE((tmp_path / "shared" / name).stat().st_mode) == 0o664, name
