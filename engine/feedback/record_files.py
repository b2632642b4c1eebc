"""Files of records, one reader for all: JSON Lines, a JSON array, parquet, CSV and TSV.

    for row in read_record_file(path):
        if row.problem is not None: ...   # e.g. "not valid JSON (...); expected ..."
        use(row.record)                   # a dict of the record's fields

Shared by the stages' data loading (engine/stages/common/data_loading.py) and
the preference-file importers (importers.py), so a file one of them reads the
other reads too. Torch-free; pyarrow is imported only for a parquet file.

- `.jsonl`, `.json`, `.ndjson`: one JSON object per line (blank lines
  skipped; a UTF-8 byte-order mark allowed), or one JSON array of objects
  when the first non-blank line starts with `[` (many `.json` files are
  really JSON lines, and some `.jsonl` files an array);
- `.parquet`: one record per table row;
- `.csv`, `.tsv`: one record per row under the header (UTF-8; a cell may be
  long and span lines).

Each record comes as a `Row` that says where it is (line N; item N of a
JSON array; row N of a parquet table). A record that cannot be read (a line
that is not JSON or not an object, a CSV row whose cells do not match the
header) comes as a Row with a `problem` instead, so a caller may stop at the
first or list them all; a file that cannot be read at all raises
`RecordFileError`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
RECORD_SUFFIXES = (*JSON_SUFFIXES, *TABLE_SUFFIXES)


class RecordFileError(ValueError):
    """A whole file could not be read; the message names it and says why."""


@dataclass(frozen=True)
class Row:
    """One record of a file, or what is wrong with it."""

    unit: str  # "line" (JSON lines; a CSV record's first line), "item" (of a JSON array) or "row" (parquet)
    number: int  # from 1
    record: dict[str, Any] | None = None
    #: what is wrong and what was expected, when there is no record; reads after "is"
    problem: str | None = None

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


def read_record_file(path: Path, *, columns: Sequence[str] | None = None) -> Iterator[Row]:
    """The records of `path` in file order, by its suffix (one of RECORD_SUFFIXES).

    `columns`: the fields a caller needs; a parquet file then reads only
    them when it has them all (a columnar file skips the bytes of the
    others), and every column otherwise, so an error can list them. Other
    files give every field either way."""
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        yield from _json_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path, columns)
    elif suffix in (".csv", ".tsv"):
        yield from _csv_rows(path, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise RecordFileError(f"{path}: not a file of records (expected {', '.join(RECORD_SUFFIXES)})")


def _json_rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    if first.lstrip(b"\xef\xbb\xbf \t").startswith(b"["):
        yield from _json_array_rows(path)
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield Row("line", number, problem=f"not UTF-8 text ({error.reason} at byte {error.start}); "
                                                  "expected UTF-8 JSON")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                yield Row("line", number, problem=f"not valid JSON ({error.msg} at column {error.colno}); "
                                                  "expected one JSON object per line")
                continue
            yield _object("line", number, value)


def _json_array_rows(path: Path) -> Iterator[Row]:
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise RecordFileError(f"{path}: not UTF-8 text ({error.reason}); expected UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise RecordFileError(
            f"{path}: the file is not valid JSON ({error}); expected JSON lines or an array of objects"
        ) from None
    if not isinstance(items, list):
        raise RecordFileError(f"{path}: a JSON {type(items).__name__}; expected JSON lines or an array of objects")
    for number, value in enumerate(items, start=1):
        yield _object("item", number, value)


def _object(unit: str, number: int, value: object) -> Row:
    if not isinstance(value, dict):
        return Row(unit, number, problem=f"a JSON {type(value).__name__}; expected a JSON object per {unit}")
    return Row(unit, number, record=value)


def _parquet_rows(path: Path, columns: Sequence[str] | None) -> Iterator[Row]:
    try:
        import pyarrow.parquet as parquet  # deferred: only parquet files need it
    except ImportError:
        raise RecordFileError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        present = parquet.read_schema(path).names
        wanted = list(columns) if columns is not None and set(columns) <= set(present) else None
        table = parquet.read_table(path, columns=wanted)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise RecordFileError(f"{path}: not a readable parquet file ({error}); expected parquet") from error
    for number, record in enumerate(table.to_pylist(), start=1):
        yield Row("row", number, record=record)


def _csv_rows(path: Path, *, delimiter: str) -> Iterator[Row]:
    # Documents are long; the csv module refuses fields over 128 KiB by default.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            width = len(reader.fieldnames or [])  # reads the header
            last_line = reader.line_num
            for record in reader:
                number = last_line + 1  # a record may span lines: name its first
                last_line = reader.line_num
                if None in record:
                    yield Row("line", number, problem=f"a row of more cells than the {width} columns of the header")
                elif any(value is None for value in record.values()):
                    yield Row("line", number, problem=f"a row of fewer cells than the {width} columns of the header")
                else:
                    yield Row("line", number, record=record)
    except UnicodeDecodeError as error:
        raise RecordFileError(f"{path}: not UTF-8 text ({error.reason}); expected a UTF-8 CSV file") from None
    except csv.Error as error:
        raise RecordFileError(f"{path}: not a readable CSV file ({error})") from None
