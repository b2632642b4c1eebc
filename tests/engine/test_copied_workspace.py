"""A run's process is known by its workspace and run, not its command name (issue 14).

Before: `rlhf cancel` in a copy of a workspace signalled the original's run
process (the copy holds the same pid, and the check was only that the pid's
command line says `engine.runtime.supervisor`), cancelling a run nobody asked
to cancel. Now the copy sees that pid as someone else's process: its run is
not signalled, and the original trains on.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine, InvalidRunState
from engine.runtime.liveness import supervisor_alive
from store import RunStatus

from .conftest import fake_pipeline
from .test_engine import wait_for_step


def copy_workspace(source: Path, target: Path) -> None:
    """What a person does with `cp -r`, made consistent: the database through SQLite's backup."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("rlhf.db*"))
    with sqlite3.connect(source / "rlhf.db") as live, sqlite3.connect(target / "rlhf.db") as copy:
        live.backup(copy)


async def test_a_cancel_in_a_copied_workspace_leaves_the_original_run_alone(
        engine: Engine, tmp_path: Path, open_engine: Callable[[Path], Engine]) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=1000, step_seconds=0.02, save_every=1000))
    await wait_for_step(engine, run.id, 3)
    pid = (await engine.get_run(run.id)).pid
    assert pid is not None
    copy_workspace(engine.workspace.root, tmp_path / "copy")
    assert supervisor_alive(pid, workspace_root=engine.workspace.root, run_id=run.id)
    assert not supervisor_alive(pid, workspace_root=tmp_path / "copy", run_id=run.id)

    # In the copy, the run's process is not its own: the run reads as crashed, and a cancel there
    # is refused in one line instead of signalling the original.
    copied = open_engine(tmp_path / "copy")
    assert (await copied.get_run(run.id)).status == RunStatus.CRASHED
    with pytest.raises(InvalidRunState, match="is crashed; only queued or running runs can be cancelled"):
        await copied.cancel(run.id)

    # The original was never signalled: it still runs, and a cancel there works as always.
    await wait_for_step(engine, run.id, 8)
    assert (await engine.get_run(run.id)).status == RunStatus.RUNNING
    assert (await engine.cancel(run.id, wait=True, timeout=30)).status == RunStatus.CANCELLED
