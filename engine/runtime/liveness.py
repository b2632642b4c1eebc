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


def supervisor_alive(pid: int) -> bool:
    """True if `pid` is a live (non-zombie) rlhf supervisor process."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if any(SUPERVISOR_MODULE in part for part in process.cmdline()):
            return True
        # Forked but not yet exec'd, it still shows its parent's command line;
        # any other command line means the pid was reused by an unrelated process.
        return time.time() - process.create_time() < STARTING_GRACE_SECONDS
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def run_process_gone(run: RunRead | RunListing) -> str | None:
    """Why an active run has no process any more, or None if it is alive."""
    now = utcnow()
    if run.pid is None:
        # heartbeat_at is stamped when the run is (re)queued, before its process starts.
        if now - (run.heartbeat_at or run.created_at) > NEVER_STARTED_AFTER:
            return "its run process never started"
        return None
    if run.host in (None, HOST):
        return None if supervisor_alive(run.pid) else f"its run process (pid {run.pid}) died"
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


def reconcile(store: Store) -> list[int]:
    """Mark every active run whose process is gone as crashed; return their ids."""
    crashed = []
    for run in store.list_runs(statuses=(RunStatus.QUEUED, RunStatus.RUNNING)):
        reason = run_process_gone(run)
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
