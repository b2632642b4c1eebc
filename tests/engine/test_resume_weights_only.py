"""A checkpoint whose optimizer state is lost is not resumed from quietly
(issue 14): the stage fails with one line saying so and how to continue,
and `rlhf resume --weights-only` continues from its weights and step."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine import Engine
from store import RunStatus
from tests.support import wait_until_ended

from .conftest import fake_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # real detached runs


async def test_lost_optimizer_state_is_refused_until_weights_only_is_asked(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=400, step_seconds=0.02, save_every=5))
    deadline = time.monotonic() + 60
    while not engine.store.list_checkpoints(run_id=run.id):
        assert time.monotonic() < deadline, "no checkpoint was saved"
        await asyncio.sleep(0.05)
    await engine.cancel(run.id, wait=True)
    checkpoints = engine.workspace.stage_dir(run.id, "work") / "checkpoints"
    folders = sorted(checkpoints.glob("checkpoint-*"), key=lambda f: int(f.name.split("-")[1]))
    for folder in folders:  # every checkpoint's optimizer state lost (a disk cleanup, a bad copy)
        (folder / "optimizer.pt").unlink()
    newest = folders[-1]

    await engine.resume(run.id)
    refused = await wait_until_ended(engine, run.id)
    assert refused.status == RunStatus.FAILED
    assert newest.name in (refused.error or "") and "--weights-only" in (refused.error or ""), refused.error

    await engine.resume(run.id, weights_only=True)
    final = await wait_until_ended(engine, run.id)
    assert final.status == RunStatus.SUCCEEDED, final.error
    (series,) = await engine.metrics(run.id, key="train/loss")
    steps = [int(p.step) for p in series.points]
    assert steps == list(range(1, 401)), "the weights-only resume went on from the checkpoint's step"
    said = [line.message for line in engine.store.logs_since(run_id=run.id)]
    assert any(f"weights of {newest.name}" in message for message in said), said
