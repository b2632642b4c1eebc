"""A resume right after a kill -9 of the run process waits for the stage's
previous worker, which is still saving its checkpoint, instead of starting a
second worker beside it (issue 14: two processes writing one stage's checkpoints)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from engine import Engine
from store import RunStatus
from tests.support import wait_for_metrics, wait_until_ended

from .conftest import fake_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # real detached runs


async def test_resume_waits_for_the_previous_workers_save(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=200, step_seconds=0.02, save_every=1000,
                                            stop_seconds=4.0))
    await wait_for_metrics(engine, run.id, 5)
    old_worker = engine.store.list_stages(run_id=run.id)[0].pid
    os.kill((await engine.get_run(run.id)).pid, signal.SIGKILL)  # the run process only: its worker saves on
    await wait_until_ended(engine, run.id)  # recorded as crashed

    await engine.resume(run.id)
    final = await wait_until_ended(engine, run.id)
    assert final.status == RunStatus.SUCCEEDED, final.error
    said = [line.message for line in engine.store.logs_since(run_id=run.id)]
    engine_said = [line for line in said if not line.startswith("fake step")]
    assert f"waiting for the previous attempt's process (pid {old_worker}) to finish saving" in said, engine_said
    # The new attempt started from the checkpoint the old worker finished, not beside it.
    assert any(line.startswith("resuming from ") and "checkpoint-" in line for line in said), said
    (series,) = await engine.metrics(run.id, key="train/loss")
    assert [int(p.step) for p in series.points] == list(range(1, 201))
