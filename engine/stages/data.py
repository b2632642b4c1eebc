"""Text corpora: load documents from any source, split them, pack them into blocks.

A corpus is a list of documents (strings). Sources:

- `builtin:stdlib-docs`;
- a file: `.txt`/`.md` (one document per blank-line-separated paragraph),
  `.jsonl`, `.json` (a list of objects, or JSON lines), `.parquet`, `.csv`,
  `.tsv` (the `text_field` column);
- a folder written by `datasets`' `save_to_disk` (its `train` split when it
  holds several), or a folder of files of the kinds above;
- a hub dataset id (its `train` split; needs a network).

Local files are read with the standard library and pyarrow rather than
`datasets.load_dataset`: that is faster for small files and writes no cache
outside the workspace.

Causal-LM training then wants fixed-length blocks: documents are tokenised,
joined with an eos after each, and cut into `block_size` pieces
(`pack_blocks`), exactly as nanoGPT concatenates its shards.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ..errors import StageFailed
from .builtin import corpus
from .context import Source

TEXT_SUFFIXES = (".txt", ".text", ".md")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".json", ".parquet", ".csv", ".tsv")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


# --- loading ------------------------------------------------------------------


def load_texts(
    source: Source,
    *,
    cache_dir: Path,
    text_field: str = "text",
    max_documents: int | None = None,
) -> list[str]:
    """The documents of a corpus, in the source's order, empty ones left out."""
    if source.kind == "builtin":
        if source.value != corpus.NAME:
            raise StageFailed(f"unknown built-in corpus {source.value!r} (known: {corpus.NAME})")
        docs: Iterable[str] = corpus.load_stdlib_docs(cache_dir)
    elif source.kind == "path":
        docs = _read_path(Path(source.value), text_field)
    else:
        docs = _read_hub(source.value, text_field, max_documents)
    # The readers are lazy where they can be, so a cap stops reading early.
    texts = list(itertools.islice(_non_empty(docs), max_documents))
    if not texts:
        raise StageFailed(f"{source.value}: no text found")
    return texts


def _non_empty(docs: Iterable[str]) -> Iterator[str]:
    return (d for d in docs if d.strip())


def _read_path(path: Path, text_field: str) -> Iterator[str]:
    if path.is_dir():
        if _is_saved_dataset(path):
            yield from _read_saved_dataset(path, text_field)
            return
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise StageFailed(
                f"{path}: neither a dataset saved with save_to_disk nor a folder of "
                f"{', '.join(SUFFIXES)} files"
            )
        for file in files:
            yield from _read_file(file, text_field)
    elif path.is_file():
        yield from _read_file(path, text_field)
    else:
        raise StageFailed(f"{path}: no such file or folder")


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield from _read_paragraphs(path)
    elif suffix in (".jsonl", ".json"):
        yield from _read_json(path, text_field)
    elif suffix == ".parquet":
        yield from _read_parquet(path, text_field)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, text_field, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise StageFailed(f"{path}: unsupported file type (supported: {', '.join(SUFFIXES)})")


def _read_paragraphs(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8")
    for paragraph in _PARAGRAPH_BREAK.split(text):
        yield paragraph.strip()


def _read_json(path: Path, text_field: str) -> Iterator[str]:
    """JSON lines, or one JSON array of objects (many `.json` files are really JSON lines)."""
    with path.open(encoding="utf-8") as lines:
        first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("["):
        for number, row in enumerate(_parse_json(path.read_text(encoding="utf-8"), path, "the file"), 1):
            yield _field(row, text_field, path, f"item {number}")
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _field(_parse_json(line, path, f"line {number}"), text_field, path, f"line {number}")


def _parse_json(text: str, path: Path, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StageFailed(
            f"{path}: {where} is not valid JSON ({exc}); expected JSON lines or an array of objects"
        ) from None


def _field(row: object, text_field: str, path: object, where: str) -> str:
    if not isinstance(row, dict):
        raise StageFailed(f"{path}: {where} is not an object with a {text_field!r} field")
    if text_field not in row:
        raise _missing_column(path, text_field, list(row))
    return _as_text(row[text_field], path, text_field)


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq  # installed with datasets

    columns = pq.read_schema(path).names
    if text_field not in columns:
        raise _missing_column(path, text_field, columns)
    # Reading one column of a columnar file skips the bytes of all the others.
    for value in pq.read_table(path, columns=[text_field]).column(0).to_pylist():
        yield _as_text(value, path, text_field)


def _read_csv(path: Path, text_field: str, *, delimiter: str) -> Iterator[str]:
    # Documents are long; the csv module refuses fields over 128 KiB by default.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if text_field not in (reader.fieldnames or []):
            raise _missing_column(path, text_field, list(reader.fieldnames or []))
        for row in reader:
            yield _as_text(row[text_field], path, text_field)


def _is_saved_dataset(folder: Path) -> bool:
    # save_to_disk writes state.json (a Dataset) or dataset_dict.json (a DatasetDict).
    return (folder / "state.json").exists() or (folder / "dataset_dict.json").exists()


def _read_saved_dataset(folder: Path, text_field: str) -> Iterator[str]:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _train_split(loaded, folder)
    if text_field not in loaded.column_names:
        raise _missing_column(folder, text_field, loaded.column_names)
    for value in loaded[text_field]:
        yield _as_text(value, folder, text_field)


def _train_split(splits: Mapping[str, Any], where: object) -> Any:
    if "train" in splits:
        return splits["train"]
    if len(splits) == 1:
        return next(iter(splits.values()))
    raise StageFailed(f"{where}: no 'train' split (splits: {', '.join(splits)})")


def _read_hub(dataset_id: str, text_field: str, max_documents: int | None) -> Iterator[str]:
    import datasets

    try:
        # With a cap, stream: a few thousand documents of a web-scale corpus
        # should not download all of it.
        loaded = datasets.load_dataset(dataset_id, split="train", streaming=max_documents is not None)
    except Exception as exc:  # the hub raises many types: offline, gated, missing
        raise StageFailed(f"cannot load dataset {dataset_id!r}: {exc}") from exc
    # A streamed dataset may not know its columns before the first row: check each row.
    for number, row in enumerate(loaded, start=1):
        yield _field(row, text_field, dataset_id, f"row {number}")


def _as_text(value: object, where: object, text_field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StageFailed(
            f"{where}: column {text_field!r} holds {type(value).__name__} values, not text"
        )
    return value


def _missing_column(where: object, text_field: str, found: Sequence[str]) -> StageFailed:
    return StageFailed(
        f"{where}: no column {text_field!r} (columns found: {', '.join(found) or 'none'}); "
        "set text_field to the one that holds the text"
    )


# --- splitting ----------------------------------------------------------------


def split_documents(
    texts: Sequence[str], eval_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Hold out whole documents for evaluation, chosen by the seed.

    Splitting by document, not by block, keeps any part of a held-out
    document out of training. Each side keeps the source order."""
    if len(texts) < 2:
        raise StageFailed(
            f"the corpus has {len(texts)} document; at least 2 are needed to hold one out for "
            "evaluation (a .txt file is split into documents at blank lines)"
        )
    n_eval = min(len(texts) - 1, max(1, math.ceil(len(texts) * eval_fraction)))
    held_out = set(random.Random(seed).sample(range(len(texts)), n_eval))
    train = [t for i, t in enumerate(texts) if i not in held_out]
    evaluation = [t for i, t in enumerate(texts) if i in held_out]
    return train, evaluation


# --- tokenising and packing ---------------------------------------------------


def tokenize_documents(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Token ids of each document, without special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer directly: parallel, and it skips building offsets
        # and the per-call checks (such as the too-long warning) of __call__.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def pack_blocks(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block_size: int
) -> torch.Tensor:
    """All documents as one token stream, an eos after each, cut into rows of
    `block_size`; the ragged tail is dropped. Returns int32 [blocks, block_size]
    (half the memory of int64; batches are widened by `collate_blocks`)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise StageFailed("the tokenizer has no eos token to mark where one document ends")
    pieces = [np.asarray(ids + [eos], dtype=np.int32) for ids in tokenize_documents(texts, tokenizer)]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    n_blocks = len(stream) // block_size
    return torch.from_numpy(stream[: n_blocks * block_size].reshape(n_blocks, block_size))


class BlockDataset(torch.utils.data.Dataset):
    """Rows of a packed block tensor, as the Trainer's data loader wants them."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[index]}


def collate_blocks(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack blocks into a batch. Labels are the inputs themselves: the model
    shifts them by one position when it computes the loss."""
    input_ids = torch.stack([r["input_ids"] for r in rows]).long()
    return {"input_ids": input_ids, "labels": input_ids}
