"""Loading corpora from every kind of source, splitting and packing them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from engine.errors import StageFailed
from engine.stages.common.context import Source
from engine.stages.common.data_loading import BlockDataset, collate_blocks, load_texts, pack_blocks, split_documents
from engine.stages.common.tokenizer import load_tokenizer

DOCS = ["The first document.", "A second, longer document\nwith two lines.", "Third."]


def load(path: Path, **kwargs) -> list[str]:
    return load_texts(Source("path", str(path)), cache_dir=path.parent, **kwargs)


# --- one test per format ------------------------------------------------------


def test_txt_splits_documents_at_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(DOCS) + "\n \n\n\n", encoding="utf-8")
    assert load(path) == DOCS


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    assert load(path) == DOCS


def test_json_array_and_json_lines_named_json(tmp_path: Path) -> None:
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"body": d} for d in DOCS], indent=2))
    assert load(array, text_field="body") == DOCS
    lines = tmp_path / "lines.json"
    lines.write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    assert load(lines, text_field="body") == DOCS


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": list(range(3)), "content": DOCS}), path)
    assert load(path, text_field="content") == DOCS


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(DOCS))
    assert load(path) == DOCS


def test_dataset_saved_to_disk(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "ds"))
    assert load(tmp_path / "ds") == DOCS
    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": DOCS}),
         "test": datasets.Dataset.from_dict({"text": ["held out"]})}
    )
    splits.save_to_disk(str(tmp_path / "dd"))
    assert load(tmp_path / "dd") == DOCS  # the train split


def test_folder_of_files_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "b.txt").write_text(DOCS[2])
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:2]))
    (folder / "notes.pdf").write_bytes(b"%PDF")  # not a text format: ignored
    assert load(folder) == DOCS


def test_builtin_corpus(shared_cache: Path) -> None:
    texts = load_texts(Source("builtin", "stdlib-docs"), cache_dir=shared_cache, max_documents=50)
    assert len(texts) == 50 and all(len(t) >= 80 for t in texts)


def test_max_documents_and_empty_documents(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [{"text": "one"}, {"text": "  "}, {"text": None}, {"text": "two"}, {"text": "three"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load(path) == ["one", "two", "three"]
    assert load(path, max_documents=2) == ["one", "two"]


# --- errors name the file, the column and what was found ----------------------


def _write_formats(tmp_path: Path) -> list[Path]:
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"body": "a", "title": "b"}) + "\n")
    parquet = tmp_path / "x.parquet"
    pq.write_table(pa.table({"body": ["a"], "title": ["b"]}), parquet)
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("body,title\na,b\n")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"body": ["a"], "title": ["b"]}).save_to_disk(str(saved))
    return [jsonl, parquet, csv_path, saved]


def test_missing_column_names_file_column_and_columns_found(tmp_path: Path) -> None:
    for path in _write_formats(tmp_path):
        with pytest.raises(StageFailed) as caught:
            load(path, text_field="text")
        message = str(caught.value)
        assert str(path) in message and "'text'" in message, message
        assert "body" in message and "title" in message, message


def test_unreadable_sources_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="no such file"):
        load(tmp_path / "missing.txt")
    (tmp_path / "x.docx").write_bytes(b"PK")
    with pytest.raises(StageFailed, match="unsupported file type"):
        load(tmp_path / "x.docx")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(StageFailed, match="line 1 is not valid JSON"):
        load(tmp_path / "bad.jsonl")
    (tmp_path / "nums.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(StageFailed, match="int values, not text"):
        load(tmp_path / "nums.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(StageFailed, match="no text"):
        load(tmp_path / "empty.txt")
    with pytest.raises(StageFailed, match="unknown built-in corpus"):
        load_texts(Source("builtin", "wikipedia"), cache_dir=tmp_path)


# --- splitting ----------------------------------------------------------------


def test_split_is_by_document_and_follows_the_seed() -> None:
    texts = [f"document {i}" for i in range(100)]
    train, held_out = split_documents(texts, 0.1, seed=0)
    assert len(held_out) == 10 and len(train) == 90
    assert sorted(train + held_out) == sorted(texts)
    assert train == [t for t in texts if t in set(train)]  # source order kept
    assert split_documents(texts, 0.1, seed=0) == (train, held_out)
    assert split_documents(texts, 0.1, seed=1)[1] != held_out
    assert len(split_documents(texts[:3], 0.01, seed=0)[1]) == 1  # at least one
    with pytest.raises(StageFailed, match="at least 2"):
        split_documents(texts[:1], 0.1, seed=0)


# --- packing ------------------------------------------------------------------


def test_packing_gives_exact_blocks_with_eos_between_documents(shared_cache: Path) -> None:
    tok = load_tokenizer(Source("builtin", "bpe-4k"), shared_cache)
    texts = [f"Document number {i} says something about packing." * (1 + i % 4) for i in range(40)]
    blocks = pack_blocks(texts, tok, 16)

    stream: list[int] = []
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert blocks.shape == (len(stream) // 16, 16)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]  # only the ragged tail is dropped
    assert (blocks == tok.eos_token_id).sum() >= len(texts) - 1

    batch = collate_blocks([BlockDataset(blocks)[i] for i in range(4)])
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (4, 16)
    assert torch.equal(batch["labels"], batch["input_ids"])  # the model shifts them itself


def test_packing_the_builtin_corpus_is_fast(shared_cache: Path) -> None:
    import time

    tok = load_tokenizer(Source("builtin", "bpe-4k"), shared_cache)
    texts = load_texts(Source("builtin", "stdlib-docs"), cache_dir=shared_cache)
    started = time.perf_counter()
    blocks = pack_blocks(texts, tok, 128)
    assert time.perf_counter() - started < 5
    assert blocks.shape[0] > 2000
