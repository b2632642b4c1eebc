"""The engine with a fake, torch-free stage: real processes, real store."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from engine import Engine, InvalidRunState, LifecycleEvent, LogEmitted, RunFinished, StageProgress
from store import RunStatus, StageStatus

from .conftest import fake_pipeline

# slow: every test starts real detached runs (a supervisor and a worker process each)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def wait_for(engine: Engine, run_id: int, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await engine.get_run(run_id)
        if predicate(run):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never got there; last status {run.status}")


async def wait_for_step(engine: Engine, run_id: int, step: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = engine.store.list_stages(run_id=run_id)
        if stages[0].step >= step:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"stage never reached step {step}")


async def test_a_run_succeeds_and_its_updates_are_followed(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=12))
    updates = [u async for u in engine.follow(run.id)]

    assert isinstance(updates[-1], RunFinished) and updates[-1].status == "succeeded"
    events = [u.event for u in updates if isinstance(u, LifecycleEvent)]
    assert events[:3] == ["RunQueued", "RunStarted", "StageStarted"]
    assert events[-2:] == ["StageSucceeded", "RunSucceeded"]
    assert "CheckpointSaved" in events
    logs = [u.message for u in updates if isinstance(u, LogEmitted)]
    assert "fake step 12" in logs  # the worker's stdout went to the store, not a terminal
    progress = [u for u in updates if isinstance(u, StageProgress)]
    assert progress[-1].step == 12 and progress[-1].total == 12

    detail = await engine.detail(run.id)
    assert detail.run.status == RunStatus.SUCCEEDED and detail.run.finished_at is not None
    assert detail.stages[0].status == StageStatus.SUCCEEDED
    assert Path(detail.stages[0].output_path, "done.txt").read_text() == "12"
    (series,) = await engine.metrics(run.id, key="train/loss")
    assert [p.step for p in series.points] == list(range(1, 13))
    assert (engine.workspace.stage_dir(run.id, "work") / "stage.log").read_text().count("fake step") == 12


async def test_a_failing_stage_records_its_traceback(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=10, fail_at=3))
    final = await wait_for(engine, run.id, lambda r: not r.status.is_active)

    assert final.status == RunStatus.FAILED
    assert "fake failure at step 3" in final.error
    stage = engine.store.list_stages(run_id=run.id)[0]
    assert stage.status == StageStatus.FAILED
    assert "RuntimeError" in stage.traceback and "fake_stage.py" in stage.traceback


async def test_runs_queue_for_the_cpu_one_at_a_time(engine: Engine, tmp_path: Path) -> None:
    first = await engine.submit(fake_pipeline(tmp_path, name="first", steps=25, step_seconds=0.04))
    second = await engine.submit(fake_pipeline(tmp_path, name="second", steps=5))

    await wait_for(engine, second.id, lambda r: engine.store.list_stages(run_id=r.id)[0].status == StageStatus.WAITING)
    await wait_for(engine, first.id, lambda r: r.status == RunStatus.RUNNING)
    assert engine.store.list_stages(run_id=second.id)[0].status == StageStatus.WAITING
    for run in (first, second):
        await wait_for(engine, run.id, lambda r: r.status == RunStatus.SUCCEEDED)

    a = engine.store.list_stages(run_id=first.id)[0]
    b = engine.store.list_stages(run_id=second.id)[0]
    assert a.finished_at <= b.started_at  # never both on the CPU at once


async def test_cancel_saves_a_checkpoint_and_leaves_no_process(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=1000, step_seconds=0.02, save_every=1000))
    await wait_for_step(engine, run.id, 5)
    worker_pid = engine.store.list_stages(run_id=run.id)[0].pid
    supervisor_pid = (await engine.get_run(run.id)).pid

    final = await engine.cancel(run.id, wait=True, timeout=30)

    assert final.status == RunStatus.CANCELLED
    stage = engine.store.list_stages(run_id=run.id)[0]
    assert stage.status == StageStatus.CANCELLED
    checkpoints = engine.store.list_checkpoints(run_id=run.id)
    assert checkpoints and checkpoints[-1].step >= 5  # saved where it stopped, not at a save_every boundary
    for pid in (worker_pid, supervisor_pid):
        deadline = time.monotonic() + 5
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"process {pid} outlived the cancel"
            await asyncio.sleep(0.05)


async def test_cancel_a_run_waiting_for_a_device(engine: Engine, tmp_path: Path) -> None:
    busy = await engine.submit(fake_pipeline(tmp_path, name="busy", steps=1000, step_seconds=0.02))
    waiting = await engine.submit(fake_pipeline(tmp_path, name="waiting", steps=5))
    await wait_for(engine, waiting.id, lambda r: engine.store.list_stages(run_id=r.id)[0].status == StageStatus.WAITING)

    assert (await engine.cancel(waiting.id, wait=True)).status == RunStatus.CANCELLED
    assert (await engine.get_run(busy.id)).status == RunStatus.RUNNING
    await engine.cancel(busy.id, wait=True)
    with pytest.raises(InvalidRunState):
        await engine.cancel(busy.id)


async def test_cancel_right_after_submit_is_a_cancel_not_a_crash(engine: Engine, tmp_path: Path) -> None:
    # The run process may not have its SIGTERM handler yet: the cancel must still read as one.
    for attempt in range(3):
        run = await engine.submit(fake_pipeline(tmp_path, name=f"quick-{attempt}", steps=1000, step_seconds=0.02))
        final = await engine.cancel(run.id, wait=True)
        assert final.status == RunStatus.CANCELLED, (attempt, final.status, final.error)


@pytest.mark.parametrize("victim", ["supervisor", "worker"])
async def test_kill_9_shows_crashed_within_15s_and_resume_finishes(engine: Engine, tmp_path: Path, victim: str) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=60, step_seconds=0.05, save_every=10))
    await wait_for_step(engine, run.id, 23)
    if victim == "supervisor":
        pid = (await engine.get_run(run.id)).pid
    else:
        pid = engine.store.list_stages(run_id=run.id)[0].pid

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    crashed = await wait_for(engine, run.id, lambda r: r.status == RunStatus.CRASHED, timeout=15)
    assert time.monotonic() - killed_at < 15
    assert crashed.error

    resumed = await engine.resume(run.id)
    assert resumed.status == RunStatus.QUEUED and resumed.attempt == 2
    final = await wait_for(engine, run.id, lambda r: not r.status.is_active)
    assert final.status == RunStatus.SUCCEEDED, final.error

    stage = engine.store.list_stages(run_id=run.id)[0]
    assert stage.step == 60 and stage.attempt == 2
    (series,) = await engine.metrics(run.id, key="train/loss")
    steps = [int(p.step) for p in series.points]
    # It went on from the last checkpoint (step 20 or later), not from zero.
    assert steps.count(1) == 1 and steps[-1] == 60
    events = [e.kind for e in engine.store.events_since(run_id=run.id)]
    assert "RunResumed" in events


async def test_resume_refuses_runs_that_succeeded_or_still_run(engine: Engine, tmp_path: Path) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=2))
    await wait_for(engine, run.id, lambda r: r.status == RunStatus.SUCCEEDED)
    with pytest.raises(InvalidRunState, match="nothing to resume"):
        await engine.resume(run.id)
