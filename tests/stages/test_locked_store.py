"""A stage rides out a store another process holds locked (issue 14).

Before: a reader holding a write transaction longer than the busy timeout
made the stage fail with `database is locked` and the raw SQL, losing the
steps since its last checkpoint. Now metrics stay buffered and go at a later
flush, other writes wait, and only a lock held past the patience fails the
stage, in one line.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import store.db
from engine.errors import StageFailed
from engine.stages.common import context as context_module
from engine.stages.pretrain.spec import PretrainSpec


@pytest.fixture(autouse=True)
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each connection waits this long for a lock (30 s in use): the test need not wait 30 s per try.
    monkeypatch.setattr(store.db, "BUSY_TIMEOUT_MS", 200)


@contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    """Another process's long write transaction (here another connection)."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_metrics_written_while_the_store_is_locked_are_kept_and_land_later(make_context, workspace, capfd) -> None:
    ctx = make_context(PretrainSpec())
    with write_lock_held(workspace.db_path):
        for step in range(1, 4):
            ctx.log_metrics(step, {"train/loss": 1.0 / step})
            ctx.set_progress(step, 3)
            ctx.flush()  # would have raised `database is locked`
    assert "the store is locked by another process" in capfd.readouterr().err
    ctx.flush()
    points = workspace.store.metric_series(stage_id=ctx.stage_id, key="train/loss")
    assert [(p.step, p.value) for p in points] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert workspace.store.get_stage(stage_id=ctx.stage_id).step == 3


def test_other_writes_wait_for_the_lock_to_go(make_context, workspace) -> None:
    ctx = make_context(PretrainSpec())
    release = threading.Event()

    def hold() -> None:
        with write_lock_held(workspace.db_path):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    threading.Timer(1.5, release.set).start()
    ctx.log("written once the lock is gone")
    holder.join()
    assert any(line.message == "written once the lock is gone"
               for line in workspace.store.logs_since(run_id=ctx.run_id))


def test_a_lock_held_past_the_patience_fails_the_stage_in_one_line(make_context, workspace, monkeypatch) -> None:
    ctx = make_context(PretrainSpec())
    monkeypatch.setattr(context_module, "STORE_PATIENCE_SECONDS", 0.5)
    with write_lock_held(workspace.db_path), pytest.raises(StageFailed, match="stayed locked by another process"):
        ctx.log("never written")
