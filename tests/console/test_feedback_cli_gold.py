"""`rlhf prefs gold --file`: known-answer pairs mixed into a batch, as scripts and leads use it (in process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from console import cli
from store import JudgementOutcome, open_workspace


def rlhf(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Eight prompts, each with a right answer and a wrong one, made rankable (two verdicts each), in tmp_path/ws."""
    monkeypatch.setenv("RLHF_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("COLUMNS", "200")
    ws = open_workspace(tmp_path / "ws")
    prompt_ids = ws.store.add_prompts([{"text": f"What is {i} + 1?"} for i in range(8)])
    made = ws.store.create_sample_batch(name="answers", settings={}, sources=["good", "bad"])
    ws.store.add_samples([{"prompt_id": pid, "batch_id": made.id, "response": text, "checkpoint": checkpoint}
                          for i, pid in enumerate(prompt_ids)
                          for text, checkpoint in ((str(i + 1), "good"), ("[red]no idea[/red]", "bad"))])
    ws.store.feedback.items_from_batch(batch_id=made.id, needed=2)
    ws.close()
    return made.id


def gold_file(folder: Path, pairs: int) -> Path:
    path = folder / "gold.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Add {i} and 2.", "chosen": str(i + 2), "rejected": "seven"}) + "\n"
                            for i in range(pairs)))
    return path


def items(tmp_path: Path, batch: int) -> list[Any]:
    ws = open_workspace(tmp_path / "ws")
    try:
        return ws.store.feedback.batch_items(batch_id=batch)
    finally:
        ws.close()


def test_gold_file_goes_in_interleaved_and_stats_grade_annotators_on_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, batch: int) -> None:
    path = gold_file(tmp_path, 3)
    code, out, err = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--file", str(path), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"batch_id": batch, "file": str(path), "format": "trl", "records": 3, "added": 3,
                               "already_in_batch": 0, "gold_items": 3, "items": 11}
    positions = [item.position for item in items(tmp_path, batch) if item.gold is not None]
    assert len(positions) == 3 and positions != [8, 9, 10]  # among the items, not appended in a row

    # two annotators: one prefers the right answer of every item, one the wrong one
    ws = open_workspace(tmp_path / "ws")
    feedback = ws.store.feedback
    right_answers = {str(i + 1) for i in range(8)} | {str(i + 2) for i in range(3)}
    for annotator in ("ann", "ben"):
        while (item := feedback.next_item(batch_id=batch, annotator=annotator)) is not None:
            a_is_right = item.responses[0].text in right_answers
            outcome = JudgementOutcome.A_BETTER if a_is_right == (annotator == "ann") else JudgementOutcome.B_BETTER
            feedback.judge(item_id=item.id, annotator=annotator, outcome=outcome, shown=item.shown)
    ws.close()

    code, out, _ = rlhf(capsys, "prefs", "stats", "--batch", "answers", "--json")
    assert code == 0
    quality = {q["annotator"]: q for q in json.loads(out)[0]["annotator_quality"]}
    assert (quality["ann"]["gold_accuracy"], quality["ann"]["gold_verdicts"]) == (1.0, 3)
    assert (quality["ben"]["gold_accuracy"], quality["ben"]["gold_verdicts"]) == (0.0, 3)

    code, out, _ = rlhf(capsys, "prefs", "stats", "--batch", "answers")
    assert code == 0 and "100% of 3" in out and "0% of 3" in out


def test_a_bad_line_exits_2_naming_file_and_line_and_adds_nothing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, batch: int) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n{not json\n")
    code, out, err = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--file", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"rlhf: {path}:2: ") and len(err.strip().splitlines()) == 1
    assert len(items(tmp_path, batch)) == 8 and all(item.gold is None for item in items(tmp_path, batch))


def test_share_caps_the_count_and_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path, batch: int) -> None:
    path = gold_file(tmp_path, 5)
    code, out, err = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--file", str(path), "--share", "0.2")
    assert (code, err) == (0, "")
    # 2 of 10 items is 20%; 3 of 11 would be 27%
    assert out.strip() == (f"batch {batch}: mixed 2 of 5 trl pairs from {path} in as gold items, among the items "
                           "still to judge; 2 of 10 items are gold now")
    code, out, _ = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--file", str(path), "--share", "0.2")
    assert code == 0 and "mixed none" in out and sum(item.gold is not None for item in items(tmp_path, batch)) == 2


def test_judge_and_lead_still_need_a_share(capsys: pytest.CaptureFixture[str], tmp_path: Path, batch: int) -> None:
    code, _, err = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--judge", "demo")
    assert code == 2 and "--share is required" in err
    code, out, err = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--judge", "demo", "--share", "0.25",
                          "--json")
    assert (code, err) == (0, "") and json.loads(out) == {"batch_id": batch, "gold_items": 2}
    code, _, err = rlhf(capsys, "prefs", "gold", "--batch", "answers", "--lead", "ann", "--share", "0.25",
                        "--format", "trl")
    assert code == 2 and "--format names the format of a --file" in err
