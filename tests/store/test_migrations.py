"""The schema comes from Alembic migrations, and they agree with the models."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from store import (
    WorkspaceError,
    models,  # noqa: F401  (the tables on SQLModel.metadata)
    open_workspace,
)
from store.db import HEAD_REVISION, alembic_config, current_revision

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"run", "stage", "metric", "checkpoint", "logline", "event", "artifact", "prompt", "samplebatch", "sample",
          "rankitem", "judgement", "itemclaim", "rewardscore"}


def tables(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        con.close()
    return {name for (name,) in rows}


def test_head_revision_is_alembics_head(tmp_path):
    script = ScriptDirectory.from_config(alembic_config(tmp_path / "x.db"))
    assert script.get_heads() == [HEAD_REVISION], "bump store.db.HEAD_REVISION"


def test_fresh_folder_gets_a_database_at_head(tmp_path):
    root = tmp_path / "ws"
    ws = open_workspace(root)
    ws.close()
    assert ws.db_path == root.resolve() / "rlhf.db"
    assert current_revision(ws.db_path) == HEAD_REVISION
    assert tables(ws.db_path) == TABLES | {"alembic_version"}


def test_reopening_is_a_no_op(tmp_path, monkeypatch):
    ws = open_workspace(tmp_path / "ws")
    run = ws.store.create_run(name="keep", spec_text="", spec={}, spec_path=None, stages=[])
    ws.close()

    def no_upgrade(*args, **kwargs):  # pragma: no cover - the assertion
        raise AssertionError("migrated a database that was already at head")

    monkeypatch.setattr(command, "upgrade", no_upgrade)
    again = open_workspace(tmp_path / "ws")
    assert again.store.get_run("keep") == run
    again.close()
    assert current_revision(again.db_path) == HEAD_REVISION


def test_reopening_does_not_import_alembic(tmp_path):
    """Start-up stays fast: Alembic loads only when there is something to migrate."""
    ws = open_workspace(tmp_path / "ws")
    ws.close()
    code = (
        "import sys, store\n"
        f"store.open_workspace({str(tmp_path / 'ws')!r}).close()\n"
        "print('alembic' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_migrated_schema_matches_the_models(workspace):
    with workspace.store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == [], "models and migrations disagree: add a migration"


def test_downgrade_to_empty_and_upgrade_again(tmp_path):
    ws = open_workspace(tmp_path / "ws")
    config = alembic_config(ws.db_path)
    with ws.store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert tables(ws.db_path) == {"alembic_version"}
    with ws.store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert tables(ws.db_path) == TABLES | {"alembic_version"}
    ws.close()


def test_database_from_a_newer_version_is_refused(tmp_path):
    ws = open_workspace(tmp_path / "ws")
    ws.close()
    con = sqlite3.connect(ws.db_path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    with pytest.raises(WorkspaceError) as info:
        open_workspace(tmp_path / "ws")
    assert str(ws.db_path) in str(info.value)
