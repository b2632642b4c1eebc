"""The active order as an engine job: `rlhf rank --order active --refresh-every N` through real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.demo.task import generate_tasks
from engine.feedback.stored.active_state import read_state
from store import open_workspace

RLHF = str(Path(sys.executable).with_name("rlhf"))

# slow: a run process and a stage worker start
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_judge_ranks_in_active_order_and_the_job_refreshes_as_it_goes(tmp_path: Path) -> None:
    env = {**os.environ, "RLHF_WORKSPACE": str(tmp_path / "ws"), "RLHF_DEVICES": "cpu", "HF_HUB_OFFLINE": "1",
           "COLUMNS": "200"}
    ws = open_workspace(tmp_path / "ws")
    tasks = generate_tasks(10, seed=1, split="heldout")
    ids = ws.store.add_prompts([{"text": t.prompt} for t in tasks])
    batch = ws.store.create_sample_batch(name="answers", settings={}, sources=["good", "bad"])
    ws.store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": text}
                          for pid, task in zip(ids, tasks, strict=True) for text in (task.reference, "no idea")])
    ws.close()

    result = subprocess.run([RLHF, "rank", "--auto", "demo", "--batch", "answers", "--order", "active",
                             "--refresh-every", "3"], env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr

    ws = open_workspace(tmp_path / "ws")
    try:
        feedback = ws.store.feedback
        assert len(feedback.live_judgements(batch_ids=[batch.id])) == 10
        assert all(item.serve_rank is not None for item in feedback.batch_items(batch_id=batch.id))
        state = read_state(feedback, batch.id)
        # ordered at the start, then after 3, 6 and 9 judgements
        assert state is not None and state.judgements == 9
        [run] = ws.store.list_runs()
        refreshes = [m for m in ws.store.metrics_since(run_id=run.id) if m.key == "active/judgements"]
        assert [m.value for m in refreshes] == [0.0, 3.0, 6.0, 9.0]
    finally:
        ws.close()
