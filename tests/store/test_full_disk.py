"""A workspace on a full disk or a read-only mount is still readable (issue 14).

Before: on a full disk `rlhf ls`, `status`, `logs` and `metrics` each
crashed with a ~60-line SQLAlchemy traceback, and a read-only workspace could
not even be listed. Now both are opened for reading only: reads work, and a
command that writes says why it cannot, in one line (exit 2).

The tests mount a small tmpfs, which needs root (and a kernel that lets the
sandbox mount); they are skipped where it cannot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import RunStatus, open_workspace
from store.reads import list_runs
from tests.support import mounted_tmpfs

RLHF = str(Path(sys.executable).with_name("rlhf"))
SPEC = '[stages.pretrain]\nkind = "pretrain"\nfrom = "builtin:llama-1m"\nmax_steps = 1\n'


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        yield disk


def workspace_with_a_run(root: Path) -> Path:
    ws = open_workspace(root / "ws")
    run = ws.store.create_run(name="kept", spec_text=SPEC, spec={}, spec_path=None, stages=[])
    ws.store.update_run(run.id, status=RunStatus.SUCCEEDED)
    ws.store.add_logs([{"run_id": run.id, "stream": "log", "level": "info", "message": "a line kept"}])
    # A run left "running" by a process the full disk killed: listing it must not try to write.
    ws.store.create_run(name="left-running", spec_text=SPEC, spec={}, spec_path=None, stages=[])
    ws.store.update_run(2, status=RunStatus.RUNNING, pid=999_999_999)
    ws.close()
    return root / "ws"


def rlhf(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RLHF, "-w", str(workspace), *args], capture_output=True, text=True, timeout=120,
                          cwd=workspace.parent.parent, env={**os.environ, "RLHF_DEVICES": "cpu"})


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as file:
        try:
            while True:
                file.write(b"\0" * (1 << 16))
        except OSError:
            pass


def check_reads_work_and_writes_say_why(workspace: Path, why: str) -> None:
    # The console's first screen reads through store.reads (plain sqlite3, no ORM): it works there too.
    assert [run.name for run in list_runs(workspace / "rlhf.db")] == ["left-running", "kept"]
    listed = rlhf(workspace, "ls")
    assert listed.returncode == 0 and "kept" in listed.stdout, listed.stderr
    assert "a line kept" in rlhf(workspace, "logs", "1").stdout
    assert rlhf(workspace, "status", "1").returncode == 0
    (workspace.parent.parent / "one.toml").write_text(SPEC)
    refused = rlhf(workspace, "run", str(workspace.parent.parent / "one.toml"))
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"rlhf: {workspace}: {why}") and "`rlhf run` cannot write there" in line


def test_a_full_disk_still_lists_shows_and_says_why_it_cannot_write(small_disk: Path) -> None:
    workspace = workspace_with_a_run(small_disk)
    fill(small_disk)
    check_reads_work_and_writes_say_why(workspace, f"no space left on device at {workspace}")


def test_a_read_only_workspace_can_be_read(small_disk: Path) -> None:
    workspace = workspace_with_a_run(small_disk)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
    check_reads_work_and_writes_say_why(workspace, "the workspace is read-only for this user")
