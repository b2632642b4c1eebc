"""A resume right after a kill -9 of the run process waits for the stage's
previous worker, which is still saving its checkpoint, instead of starting a
second worker beside it (issue 14: two processes writing one stage's checkpoints)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from engine import Engine
from store import RunStatus

from .conftest import fake_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # real detached runs


async def test_resume_waits_for_the_previous_workers_save(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=200, step_seconds=0.02, save_every=1000,
                                            stop_seconds=4.0))
    deadline = time.monotonic() + 60
    while not any(m.count >= 5 for m in engine.store.metric_summaries(run_id=run.id)):
        assert time.monotonic() < deadline, "no metrics reached the store"
        await asyncio.sleep(0.05)
    old_worker = engine.store.list_stages(run_id=run.id)[0].pid
    os.kill((await engine.get_run(run.id)).pid, signal.SIGKILL)  # the run process only: its worker saves on
    while (await engine.get_run(run.id)).status.is_active:
        assert time.monotonic() < deadline, "the kill was never recorded"
        await asyncio.sleep(0.1)

    await engine.resume(run.id)
    while (final := await engine.get_run(run.id)).status.is_active:
        assert time.monotonic() < deadline + 60, "the resumed run never ended"
        await asyncio.sleep(0.1)
    assert final.status == RunStatus.SUCCEEDED, final.error
    said = [line.message for line in engine.store.logs_since(run_id=run.id)]
    assert f"waiting for the previous attempt's process (pid {old_worker}) to finish saving" in said, [s for s in said if "fake step" not in s]
    # The new attempt started from the checkpoint the old worker finished, not beside it.
    assert any(line.startswith("resuming from ") and "checkpoint-" in line for line in said), said
    (series,) = await engine.metrics(run.id, key="train/loss")
    assert [int(p.step) for p in series.points] == list(range(1, 201))
