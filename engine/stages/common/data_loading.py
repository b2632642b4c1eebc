"""Text corpora: load documents from any source, split them, pack them into blocks.

A corpus is a list of documents (strings). Sources:

- `builtin:stdlib-docs`; the catalogue's data sets of rows, such as the demo
  task's `builtin:demo-instructions` and `builtin:demo-prompts` (read through
  the provider their catalogue entry names; their `text_field` column, e.g.
  `prompt`);
- a file: `.txt`/`.md` (one document per blank-line-separated paragraph),
  or a file of records read by engine/feedback/record_files.py (`.jsonl`,
  `.json`, `.ndjson`: JSON lines or an array of objects; `.parquet`, `.csv`,
  `.tsv`): the `text_field` column; any of them gzip-compressed (`.jsonl.gz`);
- a folder written by `datasets`' `save_to_disk`, or a folder of files of the
  kinds above;
- a hub dataset id (needs a network), or a local folder laid out as one.

A reference may name the subset, split and (hub) revision to read
(`org/name@REV?subset=S&split=T`, engine/spec/data_refs.py); without a split
the `train` one is read (datasets_source.py opens these).

Local files are read with the standard library and pyarrow rather than
`datasets.load_dataset`: that is faster for small files and writes no cache
outside the workspace.

Causal-LM training then wants fixed-length blocks: documents are tokenised,
joined with an eos after each, and cut into `block_size` pieces
(`pack_blocks`), exactly as nanoGPT concatenates its shards.

Instruction data (SFT) keeps whole rows instead: `load_records` reads the
same sources with every column, `instruction_examples` recognises the format
people bring and normalises it to one of the shapes TRL's SFTTrainer takes,
`split_examples` holds out whole prompts, and `load_prompts` reads the
prompts a model is asked while it trains.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from engine.errors import StageFailed
from engine.feedback.importers import read_records
from engine.feedback.record_files import RECORD_SUFFIXES, RecordFileError
from engine.spec.catalog import load_provider, record_providers
from engine.spec.data_refs import DataOptionError, DataOptions, data_suffix, is_compressed, parse_data_value
from engine.stages.common import stdlib_corpus as corpus
from engine.stages.common.context import Source
from engine.stages.common.datasets_source import dataset_rows, uses_datasets

TEXT_SUFFIXES = (".txt", ".text", ".md")
SUFFIXES = (*TEXT_SUFFIXES, *RECORD_SUFFIXES)
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
        if source.value in record_providers():  # a data set of rows: their `text_field` column
            name = f"builtin:{source.value}"
            docs: Iterable[str] = (_field(row, text_field, name, f"row {number}")
                                   for number, row in enumerate(load_provider(source.value)(), 1))
        elif source.value != corpus.NAME:
            known = ", ".join([corpus.NAME, *record_providers()])
            raise StageFailed(f"unknown built-in corpus {source.value!r} (known: {known})")
        else:
            docs = corpus.load_stdlib_docs(cache_dir)
    elif source.kind == "path":
        docs = _read_path(*_location(source), text_field)
    else:
        docs = _read_hub(*_location(source), text_field, max_documents)
    # The readers are lazy where they can be, so a cap stops reading early.
    texts = list(itertools.islice(_non_empty(docs), max_documents))
    if not texts:
        raise StageFailed(f"{source.value}: no text found")
    return texts


def _non_empty(docs: Iterable[str]) -> Iterator[str]:
    return (d for d in docs if d.strip())


def _location(source: Source) -> tuple[str, DataOptions]:
    """A path or hub Source's location and the subset/split/revision its reference names."""
    try:
        return parse_data_value(source.kind, source.value)
    except DataOptionError as exc:
        raise StageFailed(f"{source.kind}:{source.value}: {exc}") from None


def _read_path(location: str, options: DataOptions, text_field: str) -> Iterator[str]:
    path = Path(location)
    if uses_datasets(path, options):
        yield from _read_dataset_texts(path, options, text_field)
        return
    for file in _files_at(path):
        yield from _read_file(file, text_field)


def _files_at(path: Path) -> list[Path]:
    """The file, or the readable files of a folder (not a saved dataset), in name order."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise StageFailed(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and data_suffix(p) in SUFFIXES)
    if not files:
        raise StageFailed(
            f"{path}: neither a dataset saved with save_to_disk nor a folder of "
            f"{', '.join(SUFFIXES)} files (or .gz ones), and no subset or split named (?split=...)"
        )
    return files


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    if data_suffix(path) in TEXT_SUFFIXES:
        yield from _read_paragraphs(path)
        return
    # A parquet file then reads only the text column.
    for where, record in _read_records(path, columns=[text_field]):
        yield _field(record, text_field, path, where)


def _read_paragraphs(path: Path) -> Iterator[str]:
    if is_compressed(path):
        with gzip.open(path, "rt", encoding="utf-8") as file:
            text = file.read()
    else:
        text = path.read_text(encoding="utf-8")
    for paragraph in _PARAGRAPH_BREAK.split(text):
        yield paragraph.strip()


def _read_records(path: Path, *, columns: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for each record of a file of records (the reader the
    feedback importers share); StageFailed at the first that cannot be read."""
    if data_suffix(path) not in RECORD_SUFFIXES:
        raise StageFailed(f"{path}: unsupported file type (supported: {', '.join(SUFFIXES)}, or one of them .gz)")
    try:
        for row in read_records(path, columns=columns):
            if row.record is None:
                raise StageFailed(f"{path}: {row.where} is {row.problem}")
            yield row.where, row.record
    except RecordFileError as error:
        raise StageFailed(str(error)) from None


def _field(row: object, text_field: str, path: object, where: str) -> str:
    if not isinstance(row, dict):
        raise StageFailed(f"{path}: {where} is not an object with a {text_field!r} field")
    if text_field not in row:
        raise _missing_column(path, text_field, list(row))
    return _as_text(row[text_field], path, text_field)


def _read_dataset_texts(folder: Path, options: DataOptions, text_field: str) -> Iterator[str]:
    label = f"{folder}{options.render('path', str(folder))}"
    rows = dataset_rows(str(folder), options, hub=False)
    columns = getattr(rows, "column_names", None)
    if isinstance(columns, list) and hasattr(rows, "__getitem__"):
        # A dataset saved with save_to_disk, memory-mapped: read only its text column.
        if text_field not in columns:
            raise _missing_column(label, text_field, columns)
        yield from (_as_text(value, label, text_field) for value in rows[text_field])
        return
    # A streamed dataset may not know its columns before the first row: check each row.
    for number, row in enumerate(rows, start=1):
        yield _field(row, text_field, label, f"row {number}")


def _read_hub(dataset_id: str, options: DataOptions, text_field: str, max_documents: int | None) -> Iterator[str]:
    # With a cap, stream: a few thousand documents of a web-scale corpus
    # should not download all of it.
    loaded = dataset_rows(dataset_id, options, hub=True, streaming=max_documents is not None)
    label = f"{dataset_id}{options.render('hub', dataset_id)}"
    for number, row in enumerate(loaded, start=1):
        yield _field(row, text_field, label, f"row {number}")


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
    pieces = [np.asarray([*ids, eos], dtype=np.int32) for ids in tokenize_documents(texts, tokenizer)]
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


# --- instruction data (SFT) ---------------------------------------------------
#
# Rows keep all their columns; the format decides which ones matter:
#
#   prompt_completion  {"prompt": ..., "completion": ...}   strings or message lists
#   messages           {"messages": [{"role": ..., "content": ...}, ...]}
#                      (ShareGPT's {"from": "human"/"gpt", "value": ...} turns are converted)
#   alpaca             {"instruction", "input" (optional), "output"}
#   text               {"text": ...}                          whole-sequence loss
#
# Every format is normalised to {prompt, completion}, {messages} or {text}.

FORMATS = ("prompt_completion", "messages", "alpaca", "text")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "model": "assistant"}


def load_records(
    source: Source, *, cache_dir: Path, max_records: int | None = None
) -> list[dict[str, Any]]:
    """The rows of a data set, every column kept, in the source's order."""
    if source.kind == "builtin":
        # The catalogue's data sets of rows (the demo task's), through their
        # providers; stdlib-docs gives {"text"} rows.
        if source.value in record_providers():
            rows: Iterable[dict[str, Any]] = load_provider(source.value)()
        elif source.value == corpus.NAME:
            rows = ({"text": t} for t in corpus.load_stdlib_docs(cache_dir))
        else:
            known = ", ".join([*record_providers(), corpus.NAME])
            raise StageFailed(f"unknown built-in data set {source.value!r} (known: {known})")
    elif source.kind == "path":
        rows = _read_record_path(*_location(source))
    else:
        location, options = _location(source)
        rows = dataset_rows(location, options, hub=True, streaming=max_records is not None)
    records = list(itertools.islice(rows, max_records))
    if not records:
        raise StageFailed(f"{source.value}: no rows found")
    return records


def _read_record_path(location: str, options: DataOptions) -> Iterator[dict[str, Any]]:
    path = Path(location)
    if uses_datasets(path, options):
        yield from dataset_rows(location, options, hub=False)
        return
    for file in _files_at(path):
        yield from _read_record_file(file)


def _read_record_file(path: Path) -> Iterator[dict[str, Any]]:
    if data_suffix(path) in TEXT_SUFFIXES:
        for paragraph in _read_paragraphs(path):
            yield {"text": paragraph}
    else:
        for _where, record in _read_records(path):
            yield record


def detect_format(
    columns: Sequence[str],
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    messages_field: str = "messages",
    text_field: str = "text",
) -> str:
    """Which instruction format a row's columns are, most specific first."""
    present = set(columns)
    if messages_field in present or (messages_field == "messages" and "conversations" in present):
        return "messages"
    if {prompt_field, completion_field} <= present:
        return "prompt_completion"
    if {"instruction", "output"} <= present:
        return "alpaca"
    if text_field in present:
        return "text"
    raise StageFailed(
        f"cannot tell the data format from its columns ({', '.join(columns) or 'none'}): expected "
        f"{prompt_field!r} + {completion_field!r}, {messages_field!r}, instruction + output (alpaca) "
        f"or {text_field!r}; set format and the *_field names"
    )


def instruction_examples(
    records: Sequence[Mapping[str, Any]],
    format: str = "auto",
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    messages_field: str = "messages",
    text_field: str = "text",
    where: object = "the data",
) -> tuple[str, list[dict[str, Any]]]:
    """The format and the rows normalised to {prompt, completion}, {messages}
    or {text}. Rows with an empty prompt, answer or text are left out."""
    if not records:
        raise StageFailed(f"{where}: no rows")
    fields = {"prompt_field": prompt_field, "completion_field": completion_field,
              "messages_field": messages_field, "text_field": text_field}
    if format == "auto":
        format = detect_format(list(records[0]), **fields)
    elif format not in FORMATS:
        raise StageFailed(f"unknown data format {format!r} (known: auto, {', '.join(FORMATS)})")
    examples = []
    for number, row in enumerate(records, start=1):
        example = _normalise(row, format, where=f"{where}: row {number}", **fields)
        if example is not None:
            examples.append(example)
    if not examples:
        raise StageFailed(f"{where}: no usable rows in the {format} format (all empty)")
    return format, examples


def _normalise(
    row: Mapping[str, Any], format: str, *, where: str,
    prompt_field: str, completion_field: str, messages_field: str, text_field: str,
) -> dict[str, Any] | None:
    def column(name: str) -> Any:
        if name not in row:
            raise StageFailed(
                f"{where}: no column {name!r} for the {format} format (columns: {', '.join(row) or 'none'}); "
                "set format, or the *_field setting naming that column"
            )
        return row[name]

    if format == "prompt_completion":
        prompt, completion = column(prompt_field), column(completion_field)
        if isinstance(prompt, list) or isinstance(completion, list):  # conversational: both become turns
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if isinstance(completion, str):
                completion = [{"role": "assistant", "content": completion}]
            return {"prompt": _messages(prompt, where, prompt_field),
                    "completion": _messages(completion, where, completion_field)}
        prompt, completion = _as_text(prompt, where, prompt_field), _as_text(completion, where, completion_field)
        return {"prompt": prompt, "completion": completion} if prompt.strip() and completion.strip() else None
    if format == "messages":
        name = messages_field if messages_field in row or "conversations" not in row else "conversations"
        messages = _messages(column(name), where, name)
        return {"messages": messages} if messages else None
    if format == "alpaca":
        column("instruction"), column("output")
        prompt, output = _alpaca_prompt(row, where), _as_text(row["output"], where, "output")
        return {"prompt": prompt, "completion": output} if prompt.strip() and output.strip() else None
    text = _as_text(column(text_field), where, text_field)
    return {"text": text} if text.strip() else None


def _alpaca_prompt(row: Mapping[str, Any], where: str) -> str:
    """The instruction, and the input after a blank line when there is one."""
    instruction = _as_text(row.get("instruction"), where, "instruction")
    extra = _as_text(row.get("input"), where, "input")
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def _messages(value: Any, where: str, name: str) -> list[dict[str, str]]:
    """A conversation as [{"role", "content"}]; ShareGPT turns converted; one
    message given as a bare object is a conversation of one."""
    if isinstance(value, str):  # stored as JSON text, as CSV files must
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise StageFailed(f"{where}: column {name!r} is text, not a list of messages") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise StageFailed(f"{where}: column {name!r} holds {type(value).__name__}, not a list of messages")
    messages = []
    for turn in value:
        if not isinstance(turn, dict):
            raise StageFailed(f"{where}: column {name!r} holds a {type(turn).__name__} where a message should be")
        if "role" in turn:
            role, content = turn["role"], turn.get("content")
        elif "from" in turn:
            role, content = _SHAREGPT_ROLES.get(str(turn["from"]).lower(), turn["from"]), turn.get("value")
        else:
            raise StageFailed(
                f"{where}: a message in {name!r} has neither 'role' nor 'from' (keys: {', '.join(turn)})"
            )
        if not isinstance(role, str) or not isinstance(content, str):
            raise StageFailed(f"{where}: a message in {name!r} needs a text role and content")
        messages.append({"role": role, "content": content})
    return messages


def example_key(example: Mapping[str, Any]) -> str:
    """What identifies an example's question: its prompt (or the conversation
    before the last assistant turn, or the text). Equal keys stay on one side
    of a train/eval split."""
    if "prompt" in example:
        return json.dumps(example["prompt"], sort_keys=True)
    if "messages" in example:
        messages = example["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        return json.dumps(messages[:last], sort_keys=True)
    return example["text"]


def split_examples(
    examples: Sequence[dict[str, Any]], eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out a share of the distinct prompts (with every example that asks
    them) for evaluation, chosen by the seed; each side keeps the source order."""
    keys = list(dict.fromkeys(example_key(e) for e in examples))
    if len(keys) < 2:
        raise StageFailed(
            f"the data has {len(keys)} distinct prompt; at least 2 are needed to hold one out for evaluation"
        )
    n_eval = min(len(keys) - 1, max(1, math.ceil(len(keys) * eval_fraction)))
    held_out = set(random.Random(seed).sample(keys, n_eval))
    train = [e for e in examples if example_key(e) not in held_out]
    evaluation = [e for e in examples if example_key(e) in held_out]
    return train, evaluation


def prompt_text(prompt: object) -> str | None:
    """What a model is asked: the text of a plain prompt, or a conversation's
    first user turn (as `load_prompts` reads one); None if it has none."""
    if isinstance(prompt, str):
        return prompt if prompt.strip() else None
    if isinstance(prompt, list | tuple):
        for turn in prompt:
            role = turn.get("role") if isinstance(turn, dict) else getattr(turn, "role", None)
            content = turn.get("content") if isinstance(turn, dict) else getattr(turn, "content", None)
            if role == "user" and isinstance(content, str) and content.strip():
                return content
    return None


def held_out_prompts(examples: Iterable[Mapping[str, Any]], *, source: str) -> list[dict[str, Any]]:
    """The distinct prompts of held-out examples, in order, as eval prompts
    ({"text", "source", "reference"}): an example's `prompt`, or the first
    user turn of its `messages`; the completion, where it is plain text or one
    assistant turn, is the reference. Examples of plain text ask nothing."""
    prompts: dict[str, dict[str, Any]] = {}
    for example in examples:
        text = prompt_text(example.get("prompt", example.get("messages")))
        if text is None or text in prompts:
            continue
        completion = example.get("completion")
        if isinstance(completion, list) and len(completion) == 1 and isinstance(completion[0], dict):
            completion = completion[0].get("content")
        prompts[text] = {"text": text, "source": source,
                         "reference": completion if isinstance(completion, str) else None}
    return list(prompts.values())


def hold_out_prompts(rows: Sequence[dict[str, Any]], count: int,
                     seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(to practise on, held out): up to `count` of the distinct prompts
    `rows`, and never more than a tenth of them, chosen by the seed and never
    practised on, so an online stage's eval answers are to questions it did
    not train on. Fewer than 2 prompts: none held out. Each side keeps order."""
    if count <= 0 or len(rows) < 2:
        return list(rows), []
    n_eval = min(count, max(1, len(rows) // 10))
    held = set(random.Random(seed).sample(range(len(rows)), n_eval))
    return ([row for i, row in enumerate(rows) if i not in held],
            [row for i, row in enumerate(rows) if i in held])


def load_prompts(
    source: Source,
    *,
    cache_dir: Path,
    count: int | None,
    prompt_field: str = "prompt",
    messages_field: str = "messages",
    text_field: str = "text",
) -> list[dict[str, Any]]:
    """The first `count` distinct prompts of a data set (all with None), as
    the store keeps them: {"text", "reference" (when the data has one), "source"}.

    The prompt is the `prompt_field` column, an alpaca instruction (+ input),
    the first user message of a conversation, or the text. Only the first
    rows are read (20 per prompt wanted), so a hub data set is streamed."""
    max_records = None if count is None else 20 * count + 100
    records = load_records(source, cache_dir=cache_dir, max_records=max_records)
    columns = set(records[0])
    prompts: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(records, start=1):
        where = f"{source.value}: row {number}"
        reference = None
        if prompt_field in columns:
            text = row.get(prompt_field)
            if isinstance(text, list):
                turns = _messages(text, where, prompt_field)
                text = next((m["content"] for m in turns if m["role"] == "user"), "")
            reference = row.get("reference", row.get("completion"))
        elif messages_field in columns or "conversations" in columns:
            name = messages_field if messages_field in columns else "conversations"
            messages = _messages(row.get(name), where, name)
            text = next((m["content"] for m in messages if m["role"] == "user"), "")
        elif "instruction" in columns:
            text, reference = _alpaca_prompt(row, where), row.get("output")
        elif text_field in columns:
            text = row.get(text_field)
        else:
            raise StageFailed(
                f"{source.value}: no prompts found: expected a {prompt_field!r}, {messages_field!r}, "
                f"'instruction' or {text_field!r} column (columns: {', '.join(columns)})"
            )
        text = _as_text(text, where, prompt_field)
        if text.strip() and text not in prompts:
            prompts[text] = {"text": text, "source": f"{source.kind}:{source.value}",
                             "reference": reference if isinstance(reference, str) else None}
        if count is not None and len(prompts) >= count:
            break
    if not prompts:
        raise StageFailed(f"{source.value}: no prompts found")
    return list(prompts.values())
