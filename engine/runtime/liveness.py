"""Is a run's process still there? Runs whose process is gone become `crashed`.

Any reader (CLI, console, a supervisor starting up) calls `reconcile()`; it
looks only at queued and running runs, so it is cheap. On this host a run's
process is checked directly (pid, not a zombie, really our supervisor); runs
started on another host that share the workspace fall back to the heartbeat.
"""

from __future__ import annotations

import contextlib
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from store import RunStatus, StageStatus, utcnow

if TYPE_CHECKING:  # the ORM's models only for type checkers: the console's runs list reads without them
    from store import RunRead, Store
    from store.reads import RunListing

HEARTBEAT_SECONDS = 2.0
#: a heartbeat older than this means the run process is gone (other hosts only)
STALE_AFTER = timedelta(seconds=12)
#: a queued run with no process after this long was never started
NEVER_STARTED_AFTER = timedelta(seconds=30)

SUPERVISOR_MODULE = "engine.runtime.supervisor"
STARTING_GRACE_SECONDS = 10.0
HOST = socket.gethostname()


def supervisor_alive(pid: int, *, workspace_root: Path | None = None, run_id: int | None = None) -> bool:
    """True if `pid` is a live (non-zombie) rlhf supervisor process; given a
    workspace and a run, the supervisor of that run of that workspace.

    The command name alone is not enough: a copy of a workspace holds the
    original's pids, and a cancel there must not signal the original's run."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = process.cmdline()
        if any(SUPERVISOR_MODULE in part for part in command):
            return _runs(command, workspace_root, run_id)
        # Forked but not yet exec'd, it still shows its parent's command line;
        # any other command line means the pid was reused by an unrelated process.
        return time.time() - process.create_time() < STARTING_GRACE_SECONDS
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def stage_process_alive(pid: int, *, workspace_root: Path, stage_id: int) -> bool:
    """True if `pid` is a live process of that stage of that workspace: its worker, or the
    accelerate launcher that starts its workers (both carry `--workspace ROOT --stage-id N`).
    A pid the system has since given to another program is not."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False

    def value(flag: str) -> str | None:
        return command[command.index(flag) + 1] if flag in command[:-1] else None

    root = value("--workspace")
    return (root is not None and Path(root).resolve() == Path(workspace_root).resolve()
            and value("--stage-id") == str(stage_id))


def _runs(command: list[str], workspace_root: Path | None, run_id: int | None) -> bool:
    """Whether a supervisor's command line (`--workspace ROOT --run ID`) is
    for this workspace and run (either left out: not checked)."""
    def value(flag: str) -> str | None:
        return command[command.index(flag) + 1] if flag in command[:-1] else None

    if workspace_root is not None:
        root = value("--workspace")
        if root is None or Path(root).resolve() != Path(workspace_root).resolve():
            return False
    return run_id is None or value("--run") == str(run_id)


def run_process_gone(run: RunRead | RunListing, workspace_root: Path | None = None) -> str | None:
    """Why an active run has no process any more, or None if it is alive
    (its supervisor's, of `workspace_root` where given)."""
    now = utcnow()
    if run.pid is None:
        # heartbeat_at is stamped when the run is (re)queued, before its process starts.
        if now - (run.heartbeat_at or run.created_at) > NEVER_STARTED_AFTER:
            return "its run process never started"
        return None
    if run.host in (None, HOST):
        alive = supervisor_alive(run.pid, workspace_root=workspace_root, run_id=run.id if workspace_root else None)
        return None if alive else f"its run process (pid {run.pid}) died"
    if run.heartbeat_at is None or now - run.heartbeat_at > STALE_AFTER:
        return f"no heartbeat from {run.host} for over {STALE_AFTER.seconds} s"
    return None


def mark_crashed(store: Store, run: RunRead, reason: str) -> bool:
    """Record a crash unless the run recorded its own outcome meanwhile."""
    if not store.set_run_status_if(
        run.id,
        expected=(RunStatus.QUEUED, RunStatus.RUNNING),
        status=RunStatus.CRASHED,
        error=reason,
        finished_at=utcnow(),
    ):
        return False
    for stage in store.list_stages(run_id=run.id):
        if stage.status in (StageStatus.RUNNING, StageStatus.WAITING):
            store.update_stage(
                stage.id, status=StageStatus.CRASHED, error=reason, finished_at=utcnow()
            )
    store.add_event(run_id=run.id, kind="RunCrashed", data={"reason": reason})
    return True


def reconcile(store: Store, workspace_root: Path | None = None) -> list[int]:
    """Mark every active run whose process is gone as crashed; return their ids."""
    crashed = []
    for run in store.list_runs(statuses=(RunStatus.QUEUED, RunStatus.RUNNING)):
        reason = run_process_gone(run, workspace_root)
        if reason and mark_crashed(store, run, reason):
            crashed.append(run.id)
    return crashed


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants, even those in other sessions
    (torch elastic starts its workers with start_new_session=True)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_tree(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.send_signal(signum)
