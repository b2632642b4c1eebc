"""A stage killed before its first whole checkpoint runs again from the start on
resume: the steps it logs again replace the first attempt's (each step stored
once), as they do after a resume from a checkpoint."""

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


async def test_a_stage_rerun_from_the_start_stores_each_step_once(engine: Engine, tmp_path: Path) -> None:
    # No checkpoint before the end (save_every past the last step): a kill leaves nothing to resume from.
    run = await engine.submit(fake_pipeline(tmp_path, steps=30, step_seconds=0.05, save_every=1000))
    await wait_for_metrics(engine, run.id, 3)
    os.kill(engine.store.list_stages(run_id=run.id)[0].pid, signal.SIGKILL)
    await wait_until_ended(engine, run.id)  # the kill recorded

    await engine.resume(run.id)
    final = await wait_until_ended(engine, run.id)
    assert final.status == RunStatus.SUCCEEDED, final.error
    (series,) = await engine.metrics(run.id, key="train/loss")
    assert [int(p.step) for p in series.points] == list(range(1, 31))  # not 1, 2, 3, ... 1, 2, 3, ...
    said = [line.message for line in engine.store.logs_since(run_id=run.id)]
    assert any("replaced by the re-run" in message for message in said), said
