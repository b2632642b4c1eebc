"""A stage killed before its first whole checkpoint runs again from the start on
resume: the steps it logs again replace the first attempt's (each step stored
once), as they do after a resume from a checkpoint."""

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


async def test_a_stage_rerun_from_the_start_stores_each_step_once(engine: Engine, tmp_path: Path) -> None:
    # No checkpoint before the end (save_every past the last step): a kill leaves nothing to resume from.
    run = await engine.submit(fake_pipeline(tmp_path, steps=30, step_seconds=0.05, save_every=1000))
    deadline = time.monotonic() + 60
    while not any(m.count >= 3 for m in engine.store.metric_summaries(run_id=run.id)):
        assert time.monotonic() < deadline, "no metrics reached the store"
        await asyncio.sleep(0.05)
    os.kill(engine.store.list_stages(run_id=run.id)[0].pid, signal.SIGKILL)
    while (await engine.get_run(run.id)).status.is_active:
        assert time.monotonic() < deadline, "the kill was never recorded"
        await asyncio.sleep(0.1)

    await engine.resume(run.id)
    while (final := await engine.get_run(run.id)).status.is_active:
        assert time.monotonic() < deadline + 60, "the resumed run never ended"
        await asyncio.sleep(0.1)
    assert final.status == RunStatus.SUCCEEDED, final.error
    (series,) = await engine.metrics(run.id, key="train/loss")
    assert [int(p.step) for p in series.points] == list(range(1, 31))  # not 1, 2, 3, ... 1, 2, 3, ...
    said = [line.message for line in engine.store.logs_since(run_id=run.id)]
    assert any("replaced by the re-run" in message for message in said), said
