"""Helpers the test packages share; the fixtures built on them are in tests/conftest.py.

- `fake_spec`: a one-stage pipeline of the fake kind (tests/engine/fake_stage.py),
  for engine and console tests that need a real run process but no model;
- `end_run_processes`: kills what the runs of a test's engine started;
- `mounted_tmpfs`: a small disk of its own for a test (skipped where none can be mounted);
- `wait_until_ended`, `wait_for_metrics`: polling a real detached run, with a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import Engine, PipelineSpec, parse_spec
from engine.runtime.liveness import process_tree, signal_tree, supervisor_alive
from store import RunRead

#: RLHF_STAGE_PLUGINS for engines whose runs use the fake kind: their run processes import it too
FAKE_STAGE_PLUGINS = "tests.engine.fake_stage"


def fake_spec(tmp_path: Path, name: str = "fake", **fields: object) -> PipelineSpec:
    """A one-stage pipeline (stage `work`) of the fake kind with these fields."""
    from tests.engine import fake_stage  # noqa: F401  registers kind "fake" in this process

    lines = "\n".join(
        f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}" for k, v in fields.items()
    )
    text = textwrap.dedent(f"""\
        name = "{name}"
        [stages.work]
        kind = "fake"
        """) + lines + "\n"
    return parse_spec(text, source=f"{name}.toml", base_dir=tmp_path)


def end_run_processes(engine: Engine) -> None:
    """SIGKILL the process tree of every run in `engine`'s workspace whose run process is still alive.

    Only processes the test started: the workspace is the test's own (under
    tmp_path), so its runs' pids are the run processes its engine spawned. A
    pid is signalled only while it is still an rlhf run process
    (`supervisor_alive`), never a pid the system has since given to another
    program. The tree, not the process group: torch elastic starts a run's
    workers in sessions of their own."""
    for run in engine.reads.list_runs():
        if run.pid and supervisor_alive(run.pid, workspace_root=engine.workspace.root, run_id=run.id):
            signal_tree(process_tree(run.pid), signal.SIGKILL)


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted at `mount_point` while the block runs: a disk
    the test can fill. Mounting needs root and a kernel that lets the sandbox mount;
    the test is skipped where it cannot."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


async def wait_for_metrics(engine: Engine, run_id: int, count: int, seconds: float = 60) -> None:
    """Until some metric of the run has `count` points in the store."""
    deadline = time.monotonic() + seconds
    while not any(m.count >= count for m in engine.store.metric_summaries(run_id=run_id)):
        assert time.monotonic() < deadline, f"run {run_id}: no {count} metric points within {seconds:.0f} s"
        await asyncio.sleep(0.05)


async def wait_until_ended(engine: Engine, run_id: int, seconds: float = 60) -> RunRead:
    """The run once it is no longer active (ended, or recorded as crashed)."""
    deadline = time.monotonic() + seconds
    while (run := await engine.get_run(run_id)).status.is_active:
        assert time.monotonic() < deadline, f"run {run_id} still {run.status} after {seconds:.0f} s"
        await asyncio.sleep(0.1)
    return run


__all__ = ["FAKE_STAGE_PLUGINS", "end_run_processes", "fake_spec", "mounted_tmpfs", "wait_for_metrics",
           "wait_until_ended"]
