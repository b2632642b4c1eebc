"""`rlhf rank --auto/--list` (and, as they land, `rlhf prefs`, `rlhf arena`) as scripts use them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.demo.task import generate_tasks
from store import open_workspace

RLHF = str(Path(sys.executable).with_name("rlhf"))

# slow: every test starts a pipeline of `rlhf` processes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


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


def test_rank_auto_records_the_judge_and_list_shows_progress(tmp_path: Path, cli_env: dict[str, str]) -> None:
    batch = make_batch(tmp_path / "ws")
    listed = json.loads(rlhf("rank", "--list", "--json", env=cli_env).stdout)
    assert [(b["id"], b["name"], b["items"]) for b in listed] == [(batch, "answers", 0)]

    result = rlhf("rank", "--auto", "demo", "--batch", "answers", env=cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"batch {batch}: 5/5 judgements, 1 annotator(s)" in result.stdout

    ws = open_workspace(tmp_path / "ws")
    live = ws.store.feedback.live_judgements(batch_ids=[batch])
    ws.close()
    assert {j.annotator for j in live} == {"judge:demo"} and len(live) == 5
    # The judge preferred the right answer every time, wherever it was shown.
    assert all(j.responses[j.ranking[0]].checkpoint == "good" for j in live)
    listed = json.loads(rlhf("rank", "--list", "--json", env=cli_env).stdout)
    assert (listed[0]["items"], listed[0]["judgements_done"]) == (5, 5)


def test_rank_auto_with_a_bad_judge_or_batch_exits_2(tmp_path: Path, cli_env: dict[str, str]) -> None:
    make_batch(tmp_path / "ws")
    result = rlhf("rank", "--auto", "demo", "--batch", "nope", env=cli_env)
    assert result.returncode == 2 and "no sample batch 'nope'" in result.stderr
    result = rlhf("rank", "--auto", "not a judge", env=cli_env)
    assert result.returncode == 2 and "module:function" in result.stderr


def test_prefs_import_stats_and_export_round_trip(tmp_path: Path, cli_env: dict[str, str]) -> None:
    source = tmp_path / "prefs.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "chosen": str(i + 1), "rejected": "no"}) + "\n"
                              for i in range(4)))
    result = rlhf("prefs", "import", str(source), "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    assert (imported["format"], imported["records"]) == ("trl", 4)

    stats = json.loads(rlhf("prefs", "stats", "--json", env=cli_env).stdout)
    assert stats[0]["annotators"] == {"import:prefs.jsonl": 4} and stats[0]["outcomes"] == {"a_better": 4}

    out = tmp_path / "out.jsonl"
    result = rlhf("prefs", "export", "--out", str(out), "--format", "trl", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [json.loads(line) for line in source.read_text().splitlines()]
    raw = tmp_path / "raw.jsonl"
    assert rlhf("prefs", "export", "--out", str(raw), "--format", "raw", env=cli_env).returncode == 0
    assert [json.loads(line)["annotator"] for line in raw.read_text().splitlines()] == ["import:prefs.jsonl"] * 4


def test_a_malformed_file_names_its_line_and_imports_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + "{not json\n"
                      + json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    result = rlhf("prefs", "import", str(source), env=cli_env)
    assert result.returncode == 2
    assert f"{source}:2:" in result.stderr and f"{source}:3:" in result.stderr
    assert json.loads(rlhf("rank", "--list", "--json", env=cli_env).stdout) == []


def test_agreement_between_two_annotators_is_in_stats(tmp_path: Path, cli_env: dict[str, str]) -> None:
    batch = make_batch(tmp_path / "ws", prompts=4)
    ws = open_workspace(tmp_path / "ws")
    feedback = ws.store.feedback
    feedback.items_from_batch(batch_id=batch, needed=2)
    for annotator in ("ann", "bob"):
        while (item := feedback.next_item(batch_id=batch, annotator=annotator)) is not None:
            good = next(r.sample_id for r in item.responses if r.checkpoint == "good")
            # ann always prefers the right answer; bob does so except on the first prompt.
            prefer_good = annotator == "ann" or item.position > 0
            outcome = "a_better" if (item.shown[0] == good) == prefer_good else "b_better"
            feedback.judge(item_id=item.id, annotator=annotator, outcome=outcome, shown=item.shown)
    ws.close()
    [row] = json.loads(rlhf("prefs", "stats", "--json", env=cli_env).stdout)
    assert row["agreement"]["items"] == 4 and row["agreement"]["percent"] == pytest.approx(75.0)
    assert row["agreement"]["method"] == "cohen"


def test_arena_leaderboard_ranks_the_better_checkpoint_first(tmp_path: Path, cli_env: dict[str, str]) -> None:
    batch = make_batch(tmp_path / "ws", prompts=8)
    assert rlhf("rank", "--auto", "demo", "--batch", str(batch), env=cli_env).returncode == 0
    board = json.loads(rlhf("arena", "--json", env=cli_env).stdout)
    assert [r["player"] for r in board] == ["good", "bad"]
    # Every resample has good winning all 8, so the interval is (up to rounding) the estimate itself.
    assert board[0]["wins"] == 8 and board[0]["ci_low"] - 1e-6 <= board[0]["rating"] <= board[0]["ci_high"] + 1e-6
    assert board[0]["rating"] > board[1]["rating"] + 400
