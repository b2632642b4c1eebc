"""Instruction data for SFT: every source keeps its columns, every format is
recognised and normalised, held-out prompts stay out of training, and eval
prompts are read from any format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import StageFailed
from engine.stages.common.context import Source
from engine.stages.common.data_loading import (
    detect_format,
    instruction_examples,
    load_prompts,
    load_records,
    load_texts,
    split_examples,
)

ROWS = [
    {"prompt": "What is 1 + 1?", "completion": "2", "id": 1},
    {"prompt": "Say hi 2 times.", "completion": "hi hi", "id": 2},
]


def records(path: Path) -> list[dict]:
    return load_records(Source("path", str(path)), cache_dir=path.parent)


# --- sources ----------------------------------------------------------------------


def test_jsonl_json_parquet_csv_and_datasets_folders_keep_every_column(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    array = tmp_path / "b.json"
    array.write_text(json.dumps(ROWS))
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(folder))
    for path in (jsonl, array, parquet, folder):
        assert records(path) == ROWS, path

    table = tmp_path / "d.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "completion", "id"])
        writer.writeheader()
        writer.writerows(ROWS)
    assert records(table) == [{k: str(v) for k, v in r.items()} for r in ROWS]  # CSV has only text


def test_builtin_demo_data_sets(shared_cache: Path) -> None:
    rows = load_records(Source("builtin", "demo-instructions"), cache_dir=shared_cache, max_records=10)
    assert len(rows) == 10 and {"prompt", "completion"} <= set(rows[0])
    prompts = load_records(Source("builtin", "demo-prompts"), cache_dir=shared_cache)
    assert len(prompts) == 200 and "completion" not in prompts[0]
    with pytest.raises(StageFailed, match="unknown built-in data set 'nope'"):
        load_records(Source("builtin", "nope"), cache_dir=shared_cache)


def test_load_texts_reads_a_column_of_the_demo_data_sets(shared_cache: Path) -> None:
    # The sample stage reads its prompts with load_texts(text_field="prompt").
    texts = load_texts(Source("builtin", "demo-prompts"), cache_dir=shared_cache, text_field="prompt",
                       max_documents=3)
    assert texts == [r["prompt"] for r in load_records(Source("builtin", "demo-prompts"),
                                                       cache_dir=shared_cache)][:3]
    with pytest.raises(StageFailed, match="no column 'text'"):
        load_texts(Source("builtin", "demo-instructions"), cache_dir=shared_cache)


# --- formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["prompt", "completion"], "prompt_completion"),
        (["messages"], "messages"),
        (["conversations"], "messages"),  # ShareGPT
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "output"], "alpaca"),
        (["text", "meta"], "text"),
        (["messages", "text"], "messages"),  # most specific first
    ],
)
def test_detect_format(columns: list[str], expected: str) -> None:
    assert detect_format(columns) == expected


def test_detect_format_with_renamed_columns_and_its_error() -> None:
    assert detect_format(["question", "answer"], prompt_field="question", completion_field="answer") == \
        "prompt_completion"
    with pytest.raises(StageFailed) as info:
        detect_format(["question", "answer"])
    message = str(info.value)
    assert "columns (question, answer)" in message and "set format and the *_field names" in message


def test_alpaca_joins_instruction_and_input() -> None:
    fmt, examples = instruction_examples([
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Name a colour.", "input": "", "output": "red"},
        {"instruction": "Empty answer.", "input": "", "output": " "},  # left out
    ])
    assert fmt == "alpaca"
    assert examples == [
        {"prompt": "Translate to French.\n\ncat", "completion": "chat"},
        {"prompt": "Name a colour.", "completion": "red"},
    ]


def test_messages_sharegpt_and_json_text_become_role_content_turns() -> None:
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    fmt, examples = instruction_examples([{"conversations": turns}])
    assert fmt == "messages"
    assert examples == [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    as_text = [{"messages": json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])}]
    assert instruction_examples(as_text)[1][0]["messages"][1] == {"role": "assistant", "content": "b"}


def test_explicit_format_and_field_names() -> None:
    rows = [{"q": "2 + 2?", "a": "4", "text": "ignored"}]
    fmt, examples = instruction_examples(rows, "prompt_completion", prompt_field="q", completion_field="a")
    assert (fmt, examples) == ("prompt_completion", [{"prompt": "2 + 2?", "completion": "4"}])
    assert instruction_examples(rows, "text")[1] == [{"text": "ignored"}]
    with pytest.raises(StageFailed, match="row 1: no column 'messages' for the messages format"):
        instruction_examples(rows, "messages", where="data.jsonl")


def test_conversational_prompt_completion() -> None:
    system = {"role": "system", "content": "Be brief."}
    rows = [{"prompt": [system, {"role": "user", "content": "2 + 2?"}], "completion": "4"}]
    assert instruction_examples(rows)[1] == [{
        "prompt": [system, {"role": "user", "content": "2 + 2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    }]


def test_bad_values_are_named() -> None:
    with pytest.raises(StageFailed, match="row 2: column 'completion' holds int values, not text"):
        instruction_examples([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": 3}])
    with pytest.raises(StageFailed, match="neither 'role' nor 'from'"):
        instruction_examples([{"messages": [{"speaker": "x"}]}])


# --- splits and prompts -------------------------------------------------------------


def test_split_holds_out_whole_prompts() -> None:
    examples = [{"prompt": f"q{i % 20}", "completion": str(i)} for i in range(100)]  # each prompt 5 times
    train, evaluation = split_examples(examples, 0.1, seed=0)
    assert len(evaluation) == 10 and len(train) == 90
    assert not {e["prompt"] for e in train} & {e["prompt"] for e in evaluation}
    assert split_examples(examples, 0.1, seed=0) == (train, evaluation)
    with pytest.raises(StageFailed, match="at least 2"):
        split_examples([{"text": "same"}, {"text": "same"}], 0.5, seed=0)


def test_load_prompts_from_every_format(tmp_path: Path, shared_cache: Path) -> None:
    demo = load_prompts(Source("builtin", "demo-prompts"), cache_dir=shared_cache, count=3)
    assert [p["text"] for p in demo] == [r["prompt"] for r in load_records(
        Source("builtin", "demo-prompts"), cache_dir=shared_cache)[:3]]
    assert demo[0]["reference"] and demo[0]["source"] == "builtin:demo-prompts"

    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": "hi"}]}) + "\n")
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Add.", "input": "1 2", "output": "3"}) + "\n")
    text = tmp_path / "prompts.txt"
    text.write_text("first prompt\n\nsecond prompt\n\nfirst prompt\n")
    assert [p["text"] for p in load_prompts(Source("path", str(chats)), cache_dir=tmp_path, count=5)] == ["hi"]
    [alpaca_prompt] = load_prompts(Source("path", str(alpaca)), cache_dir=tmp_path, count=5)
    assert (alpaca_prompt["text"], alpaca_prompt["reference"]) == ("Add.\n\n1 2", "3")
    assert [p["text"] for p in load_prompts(Source("path", str(text)), cache_dir=tmp_path, count=5)] == \
        ["first prompt", "second prompt"]  # distinct
