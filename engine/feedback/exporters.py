"""Writing feedback for trainers and people: TRL preference data, KTO data, the judgement table.

    write_trl(preference_pairs(judgements, ties="margin"), "prefs.parquet")
    write_kto(unpaired_examples(judgements), "kto.jsonl")
    write_judgements(judgements, "judgements.csv")

The file type follows the suffix: `.jsonl` (also `.json`, `.ndjson`: JSON
Lines) or `.parquet` for TRL and KTO data, `.jsonl` or `.csv` for the
judgement table. Every write is atomic (atomic.py): a failed export leaves no
file, or the previous one untouched. `read_feedback` reads each back to the
same records (imported pairs' `group` is `content_key(prompt)`: files carry
no prompt keys, TRL's columns have none).

- TRL preference data: `prompt`, `chosen`, `rejected`, plus `margin` when any
  pair has one (the `margin` tie policy), which TRL's RewardTrainer uses.
  Plain strings, or with `conversational=True` lists of `{"role", "content"}`
  messages (a plain prompt becomes one user message, a plain response one
  assistant message). The default is conversational exactly when some record
  is a conversation; plain output of conversations is refused, since turning
  messages into text needs the model's chat template.
- KTO data: `prompt`, `completion`, `label` (bool), forms as above.
- The judgement table, one row per judgement: `id`, `prompt_key`,
  `annotator`, `outcome`, `prompt`, `responses` (a list of `{"id", "text",
  "model"}`), `ranking` (best first, a list for a tie, null unless outcome is
  `ranking`). In CSV the `prompt`, `responses` and `ranking` cells are JSON
  (so a prompt that is a conversation survives) and null is an empty cell.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.errors import UserInputError
from engine.feedback.atomic import atomic_path
from engine.feedback.importers import JSON_CELLS, JSONL_SUFFIXES
from engine.feedback.records import (
    Judgement,
    PreferencePair,
    Text,
    UnpairedExample,
    as_conversation,
    is_conversation,
    ranking_to_json,
    text_to_json,
)

JUDGEMENT_COLUMNS = ("id", "prompt_key", "annotator", "outcome", "prompt", "responses", "ranking")


def write_trl(
    pairs: Iterable[PreferencePair],
    path: str | os.PathLike[str],
    *,
    conversational: bool | None = None,
) -> Path:
    """TRL preference data (JSONL or parquet by suffix); returns the path written."""
    pairs = list(pairs)
    target = _target(path, pairs, "preference pairs", (".parquet",))
    convert = _conversational(
        [text for pair in pairs for text in (pair.prompt, pair.chosen, pair.rejected)], conversational, target
    )
    with_margin = any(pair.margin is not None for pair in pairs)
    rows = []
    for pair in pairs:
        row: dict[str, Any] = {
            "prompt": _form(pair.prompt, "user", convert),
            "chosen": _form(pair.chosen, "assistant", convert),
            "rejected": _form(pair.rejected, "assistant", convert),
        }
        if with_margin:
            row["margin"] = pair.margin
        rows.append(row)
    columns = {"prompt": convert, "chosen": convert, "rejected": convert}
    return _write(rows, target, {**columns, **({"margin": "float"} if with_margin else {})})


def write_kto(
    examples: Iterable[UnpairedExample],
    path: str | os.PathLike[str],
    *,
    conversational: bool | None = None,
) -> Path:
    """KTO unpaired data (JSONL or parquet by suffix); returns the path written."""
    examples = list(examples)
    target = _target(path, examples, "unpaired examples", (".parquet",))
    convert = _conversational(
        [text for example in examples for text in (example.prompt, example.completion)], conversational, target
    )
    rows = [
        {
            "prompt": _form(example.prompt, "user", convert),
            "completion": _form(example.completion, "assistant", convert),
            "label": example.label,
        }
        for example in examples
    ]
    return _write(rows, target, {"prompt": convert, "completion": convert, "label": "bool"})


def write_judgements(judgements: Iterable[Judgement], path: str | os.PathLike[str]) -> Path:
    """The raw judgement table (JSONL or CSV by suffix); returns the path written."""
    judgements = list(judgements)
    target = _target(path, judgements, "judgements", (".csv",))
    rows = [
        {
            "id": judgement.id,
            "prompt_key": judgement.prompt_key,
            "annotator": judgement.annotator,
            "outcome": judgement.outcome,
            "prompt": text_to_json(judgement.prompt),
            "responses": [
                {"id": response.id, "text": text_to_json(response.text), "model": response.model}
                for response in judgement.responses
            ],
            "ranking": ranking_to_json(judgement.ranking) if judgement.ranking is not None else None,
        }
        for judgement in judgements
    ]
    if target.suffix.lower() != ".csv":
        return _write(rows, target, {})
    with atomic_path(target) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=JUDGEMENT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({name: _cell(name, value) for name, value in row.items()})
    return target


def _cell(name: str, value: Any) -> Any:
    """A judgement-table value as a CSV cell: nested fields as JSON, null as empty."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if name in JSON_CELLS else value


def _target(path: str | os.PathLike[str], records: Sequence[Any], what: str, other_suffixes: tuple[str, ...]) -> Path:
    target = Path(path).expanduser()
    allowed = (*JSONL_SUFFIXES, *other_suffixes)
    if target.suffix.lower() not in allowed:
        raise UserInputError(f"{target}: unknown file type {target.suffix or '(none)'}; expected {', '.join(allowed)}")
    if not records:
        raise UserInputError(f"{target}: no {what} to export (with the drop tie policy, ties give none)")
    return target


def _conversational(texts: list[Text], asked: bool | None, target: Path) -> bool:
    holds_conversations = any(is_conversation(text) for text in texts)
    if asked is False and holds_conversations:
        raise UserInputError(f"{target}: the data holds conversations; expected conversational=True "
                             "(writing them as plain text would need the model's chat template)")
    return holds_conversations if asked is None else asked


def _form(text: Text, role: str, conversational: bool) -> str | list[dict[str, str]]:
    return text_to_json(as_conversation(text, role) if conversational else text)


def _write(rows: list[dict[str, Any]], target: Path, columns: dict[str, bool | str]) -> Path:
    """Rows as JSON Lines, or as parquet with `columns` naming each column's
    type (True: a conversation, False: a string, "float", "bool")."""
    with atomic_path(target) as temporary:
        if target.suffix.lower() == ".parquet":
            _write_parquet(rows, temporary, columns)
        else:
            with open(temporary, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return target


def _write_parquet(rows: list[dict[str, Any]], temporary: Path, columns: dict[str, bool | str]) -> None:
    try:
        import pyarrow as arrow  # deferred: only parquet exports need it
        import pyarrow.parquet as parquet
    except ImportError:
        raise UserInputError("writing parquet needs pyarrow (pip install pyarrow)") from None
    # An explicit schema: inference would guess a column's type from its values
    # and could differ between two exports of the same kind of data.
    message = arrow.struct([("role", arrow.string()), ("content", arrow.string())])
    types = {True: arrow.list_(message), False: arrow.string(), "float": arrow.float64(), "bool": arrow.bool_()}
    schema = arrow.schema([(name, types[kind]) for name, kind in columns.items()])
    parquet.write_table(arrow.Table.from_pylist(rows, schema=schema), temporary)
