"""Reading preference data from files: all of a file, or an error naming every bad line.

    result = read_feedback("prefs.jsonl")          # the format is detected
    result = read_feedback("hh.jsonl", format="hh")
    store_them(result.pairs or result.judgements or result.unpaired)

Files, read by record_files.py (the reader the stages' data loading shares):
JSON Lines (`.jsonl`, `.json`, `.ndjson`: one object per line, blank lines
skipped, or one JSON array of objects) and parquet (`.parquet`, read with
pyarrow, imported only when needed) for every format; CSV (`.csv`, or `.tsv`)
for the judgement table only, the one format whose CSV this package writes.
Any of them may be gzip-compressed, `NAME.EXT.gz` (HH ships `train.jsonl.gz`):
`read_records` decompresses it into a temporary copy the reader reads.

Rows that are not in a file (a `datasets` folder or a hub dataset, which
the stages open) are read by `read_feedback_records`, with the same formats
and the same list of bad rows.

Formats, by the fields of a record (other fields are ignored):

- `trl`: TRL preference data, `prompt`, `chosen`, `rejected` (and `margin`,
  kept if present). Either all plain strings, or all conversations (lists of
  `{"role", "content"}` messages; other message keys are dropped). Without
  `prompt` (TRL's implicit prompt) `chosen` and `rejected` are whole
  conversations and the prompt is their shared leading messages. A plain
  `prompt` beside whole conversations (HuggingFaceH4/ultrafeedback_binarized)
  is read the same way: the conversations already hold it.
- `hh`: Anthropic HH, `chosen` and `rejected` whole dialogues as strings with
  "\\n\\nHuman: ..." / "\\n\\nAssistant: ..." turns. They are read as
  conversations: the prompt is the dialogue before the last Assistant turn
  (which must be the same in both), the responses are the last Assistant
  turns (the shape of TRL's own hh-rlhf conversion). Turn text is stripped.
- `kto`: KTO's unpaired data, `prompt`, `completion`, `label` (true/false).
- `ranked`: one ranking of K responses per line, this package's shape:
  `{"prompt": P, "responses": [R0, R1, ...], "ranking": [2, 0, [1, 3]]}`,
  `ranking` best first, indices into `responses`, a list for tied ones; without
  `ranking` the responses are already best first. A response is a string, a
  conversation, or `{"text": ..., "model": "ckpt-a", "id": "s17"}`. Optional
  `prompt_key`, `annotator`, `id`. Read as `Judgement`s (outcome `ranking`).
- `judgements`: the raw judgement table `write_judgements` writes (see
  exporters.py), read back as `Judgement`s.

Imported pairs are grouped by `content_key(prompt)`: files have no prompt
ids. Nothing is returned unless every record is good: a bad record raises
`FeedbackFormatError` listing `FILE:LINE: what is wrong; what was expected`
for every bad line (parquet: `FILE:row N:`; a JSON array: `FILE:item N:`), the
first 20 in the message. `ImportResult.places` keeps where each good record
was, so a caller with rules of its own (gold items: engine.feedback.stored.gold)
names the line too.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from engine.errors import FeedbackFormatError, UserInputError
from engine.feedback.record_files import (
    JSON_SUFFIXES,
    TABLE_SUFFIXES,
    RecordFileError,
    Row,
    read_record_file,
)
from engine.feedback.records import (
    Judgement,
    Message,
    PreferencePair,
    Response,
    Text,
    UnpairedExample,
    as_ranking,
    as_text,
    content_key,
    is_conversation,
)
from engine.spec.data_refs import data_suffix, is_compressed

ImportFormat = Literal["auto", "trl", "hh", "ranked", "kto", "judgements"]
IMPORT_FORMATS: tuple[str, ...] = get_args(ImportFormat)
#: the suffixes of JSON Lines files (exporters.py writes them)
JSONL_SUFFIXES = JSON_SUFFIXES
#: judgement-table fields that CSV cells hold as JSON (they are lists or conversations)
JSON_CELLS = ("prompt", "responses", "ranking")


@dataclass(frozen=True)
class ImportResult:
    """What a file held; only the field of its format is filled."""

    path: Path
    format: str
    records: int
    pairs: tuple[PreferencePair, ...] = ()
    unpaired: tuple[UnpairedExample, ...] = ()
    judgements: tuple[Judgement, ...] = ()
    #: where each record was (`FILE:LINE`, `FILE:row N`), in the order of the
    #: field above: for checks of records that fit their format but not their use
    places: tuple[str, ...] = ()


class _Problem(Exception):
    """What is wrong with one record, and what was expected."""


def read_feedback(path: str | os.PathLike[str], *, format: ImportFormat = "auto") -> ImportResult:
    """Every record of `path` in `format` (detected from the first record with
    `auto`), or `FeedbackFormatError` naming every bad line."""
    source = Path(path).expanduser()
    if format not in IMPORT_FORMATS:
        raise UserInputError(f"import format {format!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    if not source.is_file():
        raise UserInputError(f"{source}: no such file")
    container = _container(source)
    if container == "csv":
        if format not in ("auto", "judgements"):
            raise UserInputError(
                f"{source}: CSV holds the judgement table only; expected .jsonl or .parquet for {format}"
            )
        format = "judgements"

    return _read_rows(list(_rows(source)), source=source, format=format, json_cells=container == "csv")


def read_feedback_records(records: Iterable[Any], *, source: str, format: ImportFormat = "auto") -> ImportResult:
    """`read_feedback` for rows that are not in a file: the rows of a
    `datasets` folder or a hub dataset (dicts), named `SOURCE: row N`."""
    if format not in IMPORT_FORMATS:
        raise UserInputError(f"import format {format!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    rows: list[tuple[str, dict[str, Any] | _Problem]] = [
        (f"{source}: row {number}",
         dict(record) if isinstance(record, dict) else _Problem(f"a {type(record).__name__}; expected a record"))
        for number, record in enumerate(records, start=1)
    ]
    return _read_rows(rows, source=Path(source), format=format, json_cells=False)


def _read_rows(rows: Sequence[tuple[str, dict[str, Any] | _Problem]], *, source: Path, format: str,
               json_cells: bool) -> ImportResult:
    records = [(where, row) for where, row in rows if not isinstance(row, _Problem)]
    if not rows:
        raise FeedbackFormatError([f"{source}: no records; expected one record per line (or row)"])
    if format == "auto" and records:
        where, first = records[0]
        format = detect_format(first)  # type: ignore[assignment]
        if format is None:
            keys = ", ".join(sorted(first)) or "none"
            earlier = [f"{place}: {row}" for place, row in rows[: rows.index((where, first))]]
            raise FeedbackFormatError([*earlier, f"{where}: cannot tell the format from the fields ({keys}); expected "
                                       "prompt/chosen/rejected (trl), chosen/rejected dialogues (hh), "
                                       "prompt/completion/label (kto), prompt/responses (ranked) or "
                                       "outcome/responses (judgements), or name the format"])

    # One pass in file order, so the problems read top to bottom.
    problems: list[str] = []
    parsed = []
    places = []
    parse = _parser(format, json_cells=json_cells) if records else None
    for where, row in rows:
        try:
            if isinstance(row, _Problem):
                raise row
            parsed.append(parse(row))  # type: ignore[misc]
            places.append(where)
        except _Problem as problem:
            problems.append(f"{where}: {problem}")
    if problems:
        raise FeedbackFormatError(problems)
    field = {"trl": "pairs", "hh": "pairs", "kto": "unpaired"}.get(format, "judgements")
    return ImportResult(source, format, len(parsed), **{field: tuple(parsed)}, places=tuple(places))


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record's fields say it is in, or None."""
    if "outcome" in record and "responses" in record:
        return "judgements"
    if "responses" in record:
        return "ranked"
    if "completion" in record and "label" in record:
        return "kto"
    if "chosen" in record and "rejected" in record:
        if "prompt" in record or not isinstance(record["chosen"], str):
            return "trl"
        return "hh"
    return None


# --- reading rows ----------------------------------------------------------------

def _container(source: Path) -> str:
    suffix = data_suffix(source)
    if suffix in JSON_SUFFIXES:
        return "jsonl"
    if suffix in TABLE_SUFFIXES:
        return "parquet" if suffix == ".parquet" else "csv"
    raise UserInputError(f"{source}: unknown file type {suffix or '(none)'}; "
                         "expected .jsonl, .json, .ndjson, .parquet, .csv or .tsv (or one of them .gz)")


def _rows(source: Path) -> Iterator[tuple[str, dict[str, Any] | _Problem]]:
    """(where, record or its problem) for each record, `where` being FILE:LINE
    (FILE:row N in parquet, FILE:item N in a JSON array)."""
    try:
        for row in read_records(source):
            where = f"{source}:{row.number}" if row.unit == "line" else f"{source}:{row.where}"
            yield where, row.record if row.record is not None else _Problem(row.problem)
    except RecordFileError as error:
        raise FeedbackFormatError([str(error)]) from None


def read_records(path: Path, *, columns: Sequence[str] | None = None) -> Iterator[Row]:
    """`read_record_file` that also reads `NAME.EXT.gz` as `NAME.EXT`. The
    file is decompressed whole into a temporary copy first (the reader wants
    a file, and a damaged stream is then told before the first record);
    messages name the `.gz` file, not the copy."""
    if not is_compressed(path):
        yield from read_record_file(path, columns=columns)
        return
    with tempfile.TemporaryDirectory(prefix="rlhf-gz-") as folder:
        copy = Path(folder) / path.name[: -len(path.suffix)]
        try:
            with gzip.open(path, "rb") as packed, copy.open("wb") as plain:
                shutil.copyfileobj(packed, plain, 1 << 20)
        except EOFError:
            raise RecordFileError(f"{path}: the gzip file is cut short (it ends before its end marker); "
                                  "expected a whole .gz file") from None
        except (gzip.BadGzipFile, zlib.error) as error:
            raise RecordFileError(f"{path}: not a readable gzip file ({error}); expected gzip-compressed "
                                  "records") from None
        try:
            yield from read_record_file(copy, columns=columns)
        except RecordFileError as error:
            raise RecordFileError(str(error).replace(str(copy), str(path))) from None


# --- one record of each format -------------------------------------------------------

def _parser(format: str, *, json_cells: bool) -> Callable[[dict[str, Any]], Any]:
    if format == "judgements":
        return lambda record: _parse_judgement(record, json_cells=json_cells)
    return {"trl": _parse_trl, "hh": _parse_hh, "kto": _parse_kto, "ranked": _parse_ranked}[format]


def _field(record: dict[str, Any], name: str, expected: str) -> Any:
    if record.get(name) is None:
        raise _Problem(f"no {name!r} field; expected {expected}")
    return record[name]


def _text(record: dict[str, Any], name: str) -> Text:
    value = _field(record, name, "a string or a list of {role, content} messages")
    try:
        return as_text(value)
    except ValueError as error:
        raise _Problem(f"{name} {error}") from None


def _same_form(texts: dict[str, Text]) -> None:
    """TRL reads a dataset as all plain text or all conversations; a mix fails there, so fail here."""
    if len({is_conversation(text) for text in texts.values()}) > 1:
        forms = ", ".join(f"{name} {'conversation' if is_conversation(t) else 'string'}" for name, t in texts.items())
        raise _Problem(f"mixes plain text and conversations ({forms}); expected one form for all")


def _parse_trl(record: dict[str, Any]) -> PreferencePair:
    chosen, rejected = _text(record, "chosen"), _text(record, "rejected")
    prompt = _text(record, "prompt") if record.get("prompt") is not None else None
    if prompt is None or (isinstance(prompt, str) and _repeats_prompt(prompt, chosen, rejected)):
        # HuggingFaceH4/ultrafeedback_binarized: a plain prompt, and whole conversations that start with it.
        prompt, chosen, rejected = _implicit_prompt(chosen, rejected)
    else:
        _same_form({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    margin = record.get("margin")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise _Problem(f"margin is {margin!r}; expected a finite number or null")
        margin = float(margin)
    return PreferencePair(content_key(prompt), prompt, chosen, rejected, margin)


def _repeats_prompt(prompt: str, chosen: Text, rejected: Text) -> bool:
    """Whether both conversations open with `prompt` as their first user turn."""
    def opens_with_it(text: Text) -> bool:
        return (not isinstance(text, str) and len(text) > 1 and text[0].role == "user"
                and text[0].content.strip() == prompt.strip())
    return opens_with_it(chosen) and opens_with_it(rejected)


def _implicit_prompt(chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """TRL's implicit prompt: the messages chosen and rejected share at the start."""
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise _Problem("no 'prompt' field and chosen/rejected are not both conversations; expected a prompt, "
                       "or conversations that share their leading messages")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise _Problem("no 'prompt' field and chosen/rejected share no leading message; expected a prompt, "
                       "or conversations that start with the same messages")
    if shared in (len(chosen), len(rejected)):
        raise _Problem("chosen and rejected are the same conversation or one extends the other; "
                       "expected them to differ in their last turns")
    return chosen[:shared], chosen[shared:], rejected[shared:]


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _hh_dialogue(value: Any, name: str) -> tuple[Message, ...]:
    """An Anthropic HH dialogue string as messages (Human -> user, Assistant -> assistant)."""
    if not isinstance(value, str):
        raise _Problem(f"{name} is {type(value).__name__}; expected an HH dialogue string")
    text = value if value.startswith("\n\n") else "\n\n" + value.lstrip()
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 5:
        raise _Problem(f"{name} is not an HH dialogue; expected \"\\n\\nHuman: ...\\n\\nAssistant: ...\" turns "
                       "(or, for TRL data, a prompt field)")
    roles = {"Human": "user", "Assistant": "assistant"}
    return tuple(Message(roles[role], content.strip()) for role, content in zip(parts[1::2], parts[2::2]))


def _parse_hh(record: dict[str, Any]) -> PreferencePair:
    chosen = _hh_dialogue(_field(record, "chosen", "an HH dialogue string"), "chosen")
    rejected = _hh_dialogue(_field(record, "rejected", "an HH dialogue string"), "rejected")
    for name, dialogue in (("chosen", chosen), ("rejected", rejected)):
        if dialogue[-1].role != "assistant":
            raise _Problem(f"{name} ends with a Human turn; expected the dialogue to end with an Assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise _Problem("chosen and rejected differ before their last Assistant turn; "
                       "expected the same dialogue up to it")
    prompt = chosen[:-1]
    return PreferencePair(content_key(prompt), prompt, chosen[-1:], rejected[-1:])


def _parse_kto(record: dict[str, Any]) -> UnpairedExample:
    prompt, completion = _text(record, "prompt"), _text(record, "completion")
    _same_form({"prompt": prompt, "completion": completion})
    label = _field(record, "label", "true or false")
    if not isinstance(label, bool):
        raise _Problem(f"label is {label!r}; expected true or false")
    return UnpairedExample(content_key(prompt), prompt, completion, label)


def _optional_id(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise _Problem(f"{name} is {value!r}; expected a non-empty string")
    return str(value)


def _parse_ranked(record: dict[str, Any]) -> Judgement:
    prompt = _text(record, "prompt")
    items = _field(record, "responses", "a list of two or more responses")
    if not isinstance(items, list) or len(items) < 2:
        raise _Problem(f"responses is {type(items).__name__} of {len(items) if isinstance(items, list) else 0}; "
                       "expected a list of two or more responses")
    responses = []
    for index, item in enumerate(items):
        model = response_id = None
        if isinstance(item, dict):
            text = _text(item, "text")
            model, response_id = _optional_id(item, "model"), _optional_id(item, "id")
        else:
            try:
                text = as_text(item)
            except ValueError as error:
                raise _Problem(f"response {index} {error}") from None
        try:
            responses.append(Response(response_id or content_key(text), text, model))
        except FeedbackFormatError as error:
            raise _Problem("; ".join(error.problems)) from None
    _same_form({"prompt": prompt, **{f"response {i}": r.text for i, r in enumerate(responses)}})
    ids = [response.id for response in responses]
    if len(set(ids)) != len(ids):
        raise _Problem("two responses are the same (same text or id); expected distinct responses")
    ranking = record.get("ranking")
    if ranking is None:  # no ranking: the responses are listed best first
        ranking = list(range(len(responses)))
    try:
        ranking = as_ranking(ranking, len(responses))
    except ValueError as error:
        raise _Problem(str(error)) from None
    key = _optional_id(record, "prompt_key") or content_key(prompt)
    annotator, judgement_id = _optional_id(record, "annotator"), _optional_id(record, "id")
    try:
        return Judgement(key, prompt, tuple(responses), "ranking", ranking, annotator=annotator, id=judgement_id)
    except FeedbackFormatError as error:
        raise _Problem("; ".join(error.problems)) from None


def _parse_judgement(record: dict[str, Any], *, json_cells: bool) -> Judgement:
    if json_cells:  # CSV: nested fields are JSON in their cells, an empty cell is null
        record = {name: (None if value == "" else value) for name, value in record.items()}
        for name in JSON_CELLS:
            if isinstance(record.get(name), str):
                try:
                    record[name] = json.loads(record[name])
                except json.JSONDecodeError as error:
                    raise _Problem(f"{name} cell is not valid JSON ({error.msg}); expected JSON") from None
    prompt_key = _optional_id(record, "prompt_key")
    if prompt_key is None:
        raise _Problem("no 'prompt_key' field; expected the prompt's key")
    prompt = _text(record, "prompt")
    outcome = _field(record, "outcome", "a_better, b_better, tie, both_bad, ranking or skipped")
    items = _field(record, "responses", "a list of {id, text, model} objects")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _Problem("responses is not a list of objects; expected a list of {id, text, model} objects")
    responses = []
    for index, item in enumerate(items):
        response_id = _optional_id(item, "id")
        if response_id is None:
            raise _Problem(f"response {index} has no id; expected {{id, text, model}}")
        responses.append((response_id, _text(item, "text"), _optional_id(item, "model")))
    try:
        return Judgement(
            prompt_key, prompt, tuple(Response(*response) for response in responses), outcome,
            record.get("ranking"), annotator=_optional_id(record, "annotator"), id=_optional_id(record, "id"),
        )
    except FeedbackFormatError as error:
        raise _Problem("; ".join(error.problems)) from None
