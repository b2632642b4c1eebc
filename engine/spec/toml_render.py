"""TOML out: the one place that writes a pipeline spec (or any document) as TOML text.

Every writer builds its spec as plain data and calls `render_toml`: the
`rlhf init` example, the console's launch form, the one-stage jobs
(`rlhf generate`, `rank --auto`, `score`, the arena), the demo pipeline and
the next round of iterated RLHF. The data is a mapping whose values are
str, int, float, bool, lists of those and mappings; a mapping becomes a
`[table]` (`[stages.NAME]`, `[stages.NAME.lora]`), or an inline table inside
a list. None means unset: TOML has no null, so the key is left out.

Comments are kept apart from the data, keyed by the path of what they
describe (`("stages", "sft", "from")`), so a writer can change the data (drop
a key, replace a value) without re-threading them; a comment on a key that
is left out goes with it.

    render_toml({"name": "demo", "stages": {"sft": {"kind": "sft", "from": "pretrain"}}},
                Comments(beside={("stages", "sft", "from"): "the pretrain stage's output"}))

tomllib (standard library) reads TOML but does not write it, and the
writers on PyPI keep no comments of ours; this module is small, torch-free
and tested by round trips through tomllib (tests/spec/test_toml_render.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: where a comment goes: the keys from the document's top down to a table or a key
TomlPath = tuple[str, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# What a TOML basic string cannot hold as is: the quote, the backslash and control characters.
_TO_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
# Lone surrogates (e.g. from surrogateescape) are not Unicode scalar values: no UTF-8, no TOML.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Comments may hold tabs but no other control character (TOML 1.0).
_COMMENT_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True)
class Comments:
    """Comments to write with a document, each keyed by the path of what it describes.

    A text of several lines becomes several comment lines ("" an empty `#`)."""

    #: lines at the top of the file, followed by an empty line
    header: str = ""
    #: lines above a key, or above a table's `[header]`
    above: Mapping[TomlPath, str] = field(default_factory=dict)
    #: a comment at the end of a key's line, or of a table's `[header]` line
    beside: Mapping[TomlPath, str] = field(default_factory=dict)
    #: for a key whose value is None: a value shown commented out (`# key = value`), as a hint
    examples: Mapping[TomlPath, Any] = field(default_factory=dict)


def render_toml(document: Mapping[str, Any], comments: Comments | None = None) -> str:
    """`document` as TOML text: its plain keys first, then its tables, each
    table's keys before its sub-tables (as TOML requires), in the order given.

    Raises TypeError for a value TOML cannot hold (None in a list, an object)
    and ValueError for one out of its range (an integer past 64 bits, a lone
    surrogate in a string)."""
    notes = comments or Comments()
    lines: list[str] = []
    if notes.header:
        lines += [*_comment_lines(notes.header.rstrip("\n")), ""]
    _write_table(lines, (), document, notes)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """One value as TOML: a string, number, boolean, array or inline table.

    Floats round-trip (`repr`: 1e-05 reads back as 1e-5 exactly; inf and nan
    are TOML's own words). Inside an inline table a None value is left out,
    as in a table; inside an array it is a TypeError."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"TOML integers are 64-bit; {value} is out of range")
        return str(int(value))
    if isinstance(value, float):
        return float.__repr__(value)  # shortest text that reads back exactly; inf, -inf, nan as TOML
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Mapping):
        entries = [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(entries) + "}" if entries else "{}"
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if any(item is None for item in value):
            raise TypeError(f"TOML has no null: cannot write None inside the list {value!r}")
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML value for {value!r} ({type(value).__name__})")


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped,
    everything else (accents, emoji) written as itself."""
    if _SURROGATE.search(text):
        raise ValueError(f"a lone surrogate cannot be written as TOML: {text!r}")
    return '"' + _TO_ESCAPE.sub(_escape, text) + '"'


def toml_key(key: str) -> str:
    """A key as written: bare when it may be (letters, digits, '_', '-'), else quoted."""
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, got {key!r}")
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _write_table(lines: list[str], path: TomlPath, table: Mapping[str, Any], notes: Comments) -> None:
    entries: list[str] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            continue  # a sub-table: written after every plain key of this table
        entries += _entry_lines((*path, key), value, notes)
    # A table that holds only tables needs no header of its own ([stages] is
    # implied by [stages.sft]); an empty one does, or it would not exist.
    if path and (entries or not table or path in notes.above or path in notes.beside):
        if lines:
            lines.append("")
        lines += _comment_lines(notes.above.get(path, ""))
        header = "[" + ".".join(toml_key(k) for k in path) + "]"
        lines.append(_with_beside(header, notes.beside.get(path, "")))
    lines += entries
    for key, value in table.items():
        if isinstance(value, Mapping):
            _write_table(lines, (*path, key), value, notes)


def _entry_lines(path: TomlPath, value: Any, notes: Comments) -> list[str]:
    """`key = value` with its comments; for None, the commented-out example or nothing."""
    key = toml_key(path[-1])
    if value is None:
        if path not in notes.examples:
            return []
        line = f"# {key} = {toml_value(notes.examples[path])}"
    else:
        line = f"{key} = {toml_value(value)}"
    return [*_comment_lines(notes.above.get(path, "")), _with_beside(line, notes.beside.get(path, ""))]


def _with_beside(line: str, comment: str) -> str:
    if not comment:
        return line
    if "\n" in comment:
        raise ValueError(f"a comment beside a line must be one line: {comment!r}")
    return f"{line}  {_comment_lines(comment)[0]}"


def _comment_lines(text: str) -> list[str]:
    if not text:
        return []
    lines = text.split("\n")
    for line in lines:
        if _COMMENT_FORBIDDEN.search(line):
            raise ValueError(f"a TOML comment cannot hold control characters: {line!r}")
    return [f"# {line}" if line else "#" for line in lines]


__all__ = ["Comments", "TomlPath", "render_toml", "toml_key", "toml_string", "toml_value"]
