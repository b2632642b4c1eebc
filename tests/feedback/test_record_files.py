"""The one reader of record files, shared by the importers and the stages' data loading."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.feedback.judges import load_judge
from engine.feedback.record_files import RECORD_SUFFIXES, RecordFileError, Row, read_record_file


def test_every_suffix_gives_the_same_records(tmp_path: Path) -> None:
    rows = [{"prompt": "p1", "chosen": "a"}, {"prompt": "p2", "chosen": "b"}]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n"
    (tmp_path / "x.jsonl").write_text(lines)
    (tmp_path / "x.ndjson").write_text("\ufeff" + lines + "\n\n")  # a byte-order mark, blank lines
    (tmp_path / "x.json").write_text(json.dumps(rows, indent=1))  # an array
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    (tmp_path / "x.csv").write_text("prompt,chosen\np1,a\np2,b\n")
    (tmp_path / "x.tsv").write_text("prompt\tchosen\np1\ta\np2\tb\n")
    for suffix in RECORD_SUFFIXES:
        read = list(read_record_file(tmp_path / f"x{suffix}"))
        assert [r.record for r in read] == rows, suffix
    assert [r.where for r in read_record_file(tmp_path / "x.json")] == ["item 1", "item 2"]
    assert [r.where for r in read_record_file(tmp_path / "x.parquet")] == ["row 1", "row 2"]
    assert [r.where for r in read_record_file(tmp_path / "x.csv")] == ["line 2", "line 3"]


def test_parquet_reads_only_the_columns_asked_for_when_it_has_them(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": ["a"], "other": ["b"]}), path)
    assert [r.record for r in read_record_file(path, columns=["text"])] == [{"text": "a"}]
    # a column it lacks: every column, so that the caller's error can list them
    assert [r.record for r in read_record_file(path, columns=["body"])] == [{"text": "a", "other": "b"}]


def test_bad_records_come_as_problems_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": \n[1]\n')
    assert list(read_record_file(path)) == [
        Row("line", 1, record={"a": 1}),
        Row("line", 2, problem="not valid JSON (Expecting value at column 7); expected one JSON object per line"),
        Row("line", 3, problem="a JSON list; expected a JSON object per line"),
    ]
    table = tmp_path / "x.csv"
    table.write_text("a,b\n1,2,3\n4\n")
    assert [r.problem for r in read_record_file(table)] == [
        "a row of more cells than the 2 columns of the header",
        "a row of fewer cells than the 2 columns of the header",
    ]


def test_unreadable_files_raise(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(RecordFileError, match="the file is not valid JSON"):
        list(read_record_file(tmp_path / "x.json"))
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(RecordFileError, match="not a readable parquet file"):
        list(read_record_file(tmp_path / "x.parquet"))
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(RecordFileError, match="not a file of records"):
        list(read_record_file(tmp_path / "x.txt"))


def test_the_demo_judge_reads_only_prompts_it_can_score() -> None:
    judge = load_judge("demo")
    assert judge.reads("What is 3 + 5?") == {"kind": "add"}
    assert judge.reads("Write a poem about the sea.") is None
    assert list(judge.score("What is 3 + 5?", ["8"])) == [1.0]
