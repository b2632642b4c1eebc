"""Writing TRL, KTO and judgement files: round trips through read_feedback, and atomic writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from engine.errors import UserInputError
from engine.feedback import (
    Judgement,
    Message,
    PreferencePair,
    Response,
    content_key,
    exporters,
    preference_pairs,
    read_feedback,
    unpaired_examples,
    write_judgements,
    write_kto,
    write_trl,
)

CONVERSATION = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi, \"you\"\nthere"})


def judgements() -> list[Judgement]:
    """A mix of every outcome, plain and conversational prompts, tied tiers, models, missing annotators."""
    def responses(*texts, models=None):
        return tuple(Response(f"s{i}-{t[:3]}", t, (models or {}).get(i)) for i, t in enumerate(texts))

    return [
        Judgement("k1", "Name a colour.", responses("red", "blue", "sky", "4"), "ranking", [1, [0, 2], 3],
                  annotator="ann", id=1),
        Judgement("k1", "Name a colour.", responses("red", "4"), "a_better", annotator="bob", id="2"),
        Judgement("k2", CONVERSATION, responses("hello", "yo", models={0: "sft", 1: "ppo"}), "tie", id=3),
        Judgement("k2", CONVERSATION, responses("hello", "yo"), "both_bad", annotator="ann"),
        Judgement("k3", "Unicode: ünïcødé, a comma, \"quotes\"", responses("ça va", "bien, merci"), "b_better"),
        Judgement("k4", "skip me", responses("x", "y"), "skipped", annotator="ann"),
    ]


def keyed(pairs):
    """Pairs as read back: files carry no prompt keys, so imports group by content."""
    return tuple(PreferencePair(content_key(p.prompt), p.prompt, p.chosen, p.rejected, p.margin) for p in pairs)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("ties", ["drop", "margin"])
def test_trl_round_trip(tmp_path, suffix, ties):
    pairs = preference_pairs(judgements(), ties=ties)
    plain = [p for p in pairs if isinstance(p.prompt, str)]
    path = write_trl(plain, tmp_path / f"prefs{suffix}")
    assert read_feedback(path).pairs == keyed(plain)
    # conversational: plain prompts become a user message, plain responses an assistant message
    path = write_trl(pairs, tmp_path / f"conv{suffix}", conversational=True)
    back = read_feedback(path)
    assert back.format == "trl" and len(back.pairs) == len(pairs)
    for original, read in zip(pairs, back.pairs):
        if isinstance(original.prompt, str):
            assert read.prompt == (Message("user", original.prompt),)
            assert read.chosen == (Message("assistant", original.chosen),)
        else:
            assert read.prompt == original.prompt
            assert read.chosen == (Message("assistant", original.chosen),)
            assert read.rejected == (Message("assistant", original.rejected),)
        assert read.margin == original.margin


def test_trl_columns_carry_a_margin_only_under_the_margin_policy(tmp_path):
    dropped = write_trl([p for p in preference_pairs(judgements()) if isinstance(p.prompt, str)], tmp_path / "d.jsonl")
    assert set(json.loads(dropped.read_text().splitlines()[0])) == {"prompt", "chosen", "rejected"}
    margin = write_trl([p for p in preference_pairs(judgements(), ties="margin") if isinstance(p.prompt, str)],
                       tmp_path / "m.jsonl")
    rows = [json.loads(line) for line in margin.read_text().splitlines()]
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "margin"}
    assert rows[0] == {"prompt": "Name a colour.", "chosen": "blue", "rejected": "red", "margin": 1.0}


def test_conversations_are_not_written_as_plain_text(tmp_path):
    with pytest.raises(UserInputError, match="holds conversations; expected conversational=True"):
        write_trl(preference_pairs(judgements(), ties="margin"), tmp_path / "x.jsonl", conversational=False)
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_kto_round_trip(tmp_path, suffix):
    examples = [u for u in unpaired_examples(judgements()) if isinstance(u.prompt, str)]
    assert {u.label for u in examples} == {True, False}
    back = read_feedback(write_kto(examples, tmp_path / f"kto{suffix}"))
    assert back.format == "kto"
    assert [(u.prompt, u.completion, u.label) for u in back.unpaired] == [
        (u.prompt, u.completion, u.label) for u in examples
    ]
    assert all(u.group == content_key(u.prompt) for u in back.unpaired)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_judgement_table_round_trip(tmp_path, suffix):
    original = judgements()
    back = read_feedback(write_judgements(original, tmp_path / f"judgements{suffix}"))
    assert back.format == "judgements"
    assert back.judgements == tuple(original)
    for ties in ("drop", "margin"):
        assert preference_pairs(back.judgements, ties=ties) == preference_pairs(original, ties=ties)


def test_the_judgement_csv_has_one_row_per_judgement_with_json_cells(tmp_path):
    import csv

    path = write_judgements(judgements(), tmp_path / "j.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and list(rows[0]) == list(exporters.JUDGEMENT_COLUMNS)
    assert rows[0]["outcome"] == "ranking" and json.loads(rows[0]["ranking"]) == [1, [0, 2], 3]
    assert rows[2]["annotator"] == "" and json.loads(rows[2]["prompt"])[1]["content"] == "hi, \"you\"\nthere"


def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    pairs = [p for p in preference_pairs(judgements()) if isinstance(p.prompt, str)]
    calls = []
    real_dumps = json.dumps

    def failing_dumps(value, **kwargs):
        calls.append(value)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_dumps(value, **kwargs)

    monkeypatch.setattr(exporters.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="disk full"):
        write_trl(pairs, tmp_path / "prefs.jsonl")
    assert len(calls) == 3  # it failed part way, after writing two rows
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary file


def test_a_failed_export_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "prefs.parquet"
    pairs = [p for p in preference_pairs(judgements()) if isinstance(p.prompt, str)]
    write_trl(pairs, target)
    before = target.read_bytes()

    import pyarrow.parquet as pq

    def half_written(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half")
        raise OSError("killed")

    monkeypatch.setattr(pq, "write_table", half_written)
    with pytest.raises(OSError, match="killed"):
        write_trl(pairs[:1], target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["prefs.parquet"]


def test_exports_are_readable_by_others_and_refuse_bad_targets(tmp_path):
    path = write_judgements(judgements(), tmp_path / "j.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(UserInputError, match=r"unknown file type \.csv"):
        write_trl(preference_pairs(judgements()), tmp_path / "prefs.csv")
    with pytest.raises(UserInputError, match="no preference pairs to export"):
        write_trl([], tmp_path / "prefs.jsonl")
    with pytest.raises(UserInputError, match="expected an existing folder"):
        write_judgements(judgements(), tmp_path / "missing" / "j.jsonl")


def test_datasets_reads_the_exports_as_trl_expects(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = preference_pairs(judgements(), ties="margin")
    for suffix, loader in ((".jsonl", "json"), (".parquet", "parquet")):
        path = write_trl(pairs, tmp_path / f"prefs{suffix}")
        data = datasets.load_dataset(loader, data_files=str(path), split="train")
        assert data.column_names == ["prompt", "chosen", "rejected", "margin"]
        # conversational by default, since the tie of k2 is a conversation
        assert data[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
        assert data[0]["chosen"] == [{"role": "assistant", "content": "blue"}]
        assert data[0]["margin"] == 1.0
