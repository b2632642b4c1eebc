"""Several processes on one workspace: the run process, stage workers, the console."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from store import NewStage, open_workspace

pytestmark = pytest.mark.slow  # every test spawns fresh interpreters that write at once

WRITERS = 2
BATCHES = 150
KEYS = 10


def write_metrics(root: str, run_id: int, stage_id: int, writer: int, barrier) -> None:
    """One stage worker: a small transaction per step, as StageContext flushes them."""
    ws = open_workspace(root, create=False)
    barrier.wait(60)  # start writing together
    for step in range(BATCHES):
        ws.store.add_metrics([
            {"run_id": run_id, "stage_id": stage_id, "key": f"w{writer}/k{k}", "step": step,
             "value": float(step * KEYS + k), "wall_time": time.time()}
            for k in range(KEYS)
        ])
        ws.store.heartbeat(run_id)
        ws.store.update_stage(stage_id, step=step)
    ws.close()


def open_fresh(root: str, barrier) -> None:
    import alembic.command  # noqa: F401

    import store.db  # noqa: F401  (imports done before the race starts)

    barrier.wait(60)
    open_workspace(root).close()


def run_processes(target, args_list, timeout=120) -> list[int]:
    """Run target(*args, barrier) in one spawned process per args; their exit codes."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_list))
    processes = [ctx.Process(target=target, args=(*args, barrier)) for args in args_list]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout)
    codes = [p.exitcode for p in processes]
    for p in processes:
        if p.is_alive():  # pragma: no cover - only on a hang
            p.kill()
    return codes


def test_two_processes_writing_metrics_lose_nothing(tmp_path: Path):
    ws = open_workspace(tmp_path / "ws")
    run = ws.store.create_run(
        name="concurrent", spec_text="", spec={}, spec_path=None,
        stages=[NewStage(f"s{i}", "pretrain", i, None, {}) for i in range(WRITERS)],
    )
    stages = ws.store.list_stages(run_id=run.id)
    codes = run_processes(
        write_metrics, [(str(ws.root), run.id, stages[w].id, w) for w in range(WRITERS)]
    )
    assert codes == [0] * WRITERS

    summaries = ws.store.metric_summaries(run_id=run.id)
    assert len(summaries) == WRITERS * KEYS
    assert all(s.count == BATCHES and s.last_step == BATCHES - 1 for s in summaries)
    for w in range(WRITERS):
        series = ws.store.metric_series(stage_id=stages[w].id, key=f"w{w}/k3")
        assert [p.value for p in series] == [float(step * KEYS + 3) for step in range(BATCHES)]
        assert ws.store.get_stage(stage_id=stages[w].id).step == BATCHES - 1
    ws.close()


def test_processes_opening_a_fresh_workspace_together(tmp_path: Path):
    failures = 0
    for attempt in range(3):
        codes = run_processes(open_fresh, [(str(tmp_path / f"ws{attempt}"),)] * 3)
        failures += sum(code != 0 for code in codes)
    assert failures == 0
