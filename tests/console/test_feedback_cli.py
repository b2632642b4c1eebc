"""`rlhf rank --auto/--list` (and, as they land, `rlhf prefs`, `rlhf arena`) as scripts use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.demo_task import generate_tasks
from store import open_workspace

RLHF = str(Path(sys.executable).with_name("rlhf"))

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RLHF_WORKSPACE": str(tmp_path / "ws"), "RLHF_DEVICES": "cpu", "COLUMNS": "200"}


def rlhf(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RLHF, *args], env=env, capture_output=True, text=True, timeout=90)


def make_batch(workspace: Path, prompts: int = 5, name: str = "answers") -> int:
    """Demo-task prompts, each with the right answer and a wrong one."""
    ws = open_workspace(workspace)
    tasks = generate_tasks(prompts, seed=1, split="heldout")
    ids = ws.store.add_prompts([{"text": t.prompt, "reference": t.reference} for t in tasks])
    batch = ws.store.create_sample_batch(name=name, settings={"temperature": 1.0}, sources=["good", "bad"])
    ws.store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": response, "checkpoint": checkpoint}
        for pid, task in zip(ids, tasks)
        for response, checkpoint in ((task.reference, "good"), ("[red]no idea[/red]", "bad"))
    ])
    ws.close()
    return batch.id


def test_rank_auto_records_the_judge_and_list_shows_progress(tmp_path: Path, env: dict[str, str]) -> None:
    batch = make_batch(tmp_path / "ws")
    listed = json.loads(rlhf("rank", "--list", "--json", env=env).stdout)
    assert [(b["id"], b["name"], b["items"]) for b in listed] == [(batch, "answers", 0)]

    result = rlhf("rank", "--auto", "demo", "--batch", "answers", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"batch {batch}: 5/5 judgements, 1 annotator(s)" in result.stdout

    ws = open_workspace(tmp_path / "ws")
    live = ws.store.feedback.live_judgements(batch_ids=[batch])
    ws.close()
    assert {j.annotator for j in live} == {"judge:demo"} and len(live) == 5
    # The judge preferred the right answer every time, wherever it was shown.
    assert all(j.responses[j.ranking[0]].checkpoint == "good" for j in live)
    listed = json.loads(rlhf("rank", "--list", "--json", env=env).stdout)
    assert (listed[0]["items"], listed[0]["judgements_done"]) == (5, 5)


def test_rank_auto_with_a_bad_judge_or_batch_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    make_batch(tmp_path / "ws")
    result = rlhf("rank", "--auto", "demo", "--batch", "nope", env=env)
    assert result.returncode == 2 and "no sample batch 'nope'" in result.stderr
    result = rlhf("rank", "--auto", "not a judge", env=env)
    assert result.returncode == 2 and "module:function" in result.stderr
