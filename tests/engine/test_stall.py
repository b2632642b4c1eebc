"""A hung stage shows as stalled, and can be set to fail (issue 14).

Before: a worker stopped with SIGSTOP for 97 s stayed `running` at the same
step, since the run process's heartbeat goes on and nothing watched the
stage's progress. Now the run process watches the step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine import Engine
from store import RunStatus, StageStatus

from .conftest import fake_pipeline
from .test_engine import wait_for, wait_for_step

RLHF = str(Path(sys.executable).with_name("rlhf"))


def stage_of(engine: Engine, run_id: int):
    return engine.store.list_stages(run_id=run_id)[0]


async def until(engine: Engine, run_id: int, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stage = stage_of(engine, run_id)
        if predicate(stage):
            return stage
        time.sleep(0.2)
    raise AssertionError(f"never got there: {stage_of(engine, run_id)}")


async def test_a_stopped_worker_shows_as_stalled_and_recovers(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=2000, step_seconds=0.02, stall_minutes=0.05))
    await wait_for_step(engine, run.id, 3)
    worker = stage_of(engine, run.id).pid
    os.kill(worker, signal.SIGSTOP)
    try:
        stalled = await until(engine, run.id, lambda s: (s.error or "").startswith("stalled:"))
        assert stalled.status == StageStatus.RUNNING
        shown = subprocess.run([RLHF, "-w", str(engine.workspace.root), "status", str(run.id)],
                               capture_output=True, text=True, timeout=60)
        assert " stalled " in shown.stdout and "stall_minutes = 0.05" in shown.stdout, shown.stdout
    finally:
        os.kill(worker, signal.SIGCONT)
    recovered = await until(engine, run.id, lambda s: s.error is None)
    assert recovered.status == StageStatus.RUNNING
    await engine.cancel(run.id, wait=True, timeout=30)


async def test_on_stall_fail_stops_the_stage_resumably(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=2000, step_seconds=0.02, save_every=2,
                                            stall_minutes=0.05, on_stall="fail"))
    await wait_for_step(engine, run.id, 5)
    os.kill(stage_of(engine, run.id).pid, signal.SIGSTOP)  # killed by the run process, not continued
    finished = await wait_for(engine, run.id, lambda r: not r.status.is_active, timeout=60)
    assert finished.status == RunStatus.FAILED
    stage = stage_of(engine, run.id)
    assert stage.status == StageStatus.FAILED
    assert stage.error.startswith("stalled: no step past") and "on_stall = fail" in stage.error
