"""`--set STAGE.KEY=VALUE`: changing a spec's keys from the command line.

    rlhf run pipeline.toml --set sft.max_steps=50 --set sft.lora.r=16 --set ppo.prompts=./p.jsonl

Each value is read as a TOML value (`50`, `2e-5`, `true`, `"text"`, `[1, 2]`); a
word that is not valid TOML is taken as a string, so paths and names need no
quotes. The overrides are applied to the file's `[stages.NAME]` tables before
the spec is validated, so a bad key or value gets the same message the file
would get, with the `--set` that brought it in named beside the field.

The run records the spec as validated: the file's tables with the overrides
applied, written back as TOML with a header naming the file and the overrides
(the file's own comments are not kept in that copy).

Torch-free, like the rest of engine.spec: the CLI runs it before anything starts.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any

from engine.errors import SpecError
from engine.spec.pipeline import PipelineSpec, load_spec, parse_spec, read_spec_file
from engine.spec.toml_render import Comments, render_toml, toml_value

#: the shape of one override: a stage, one or more keys, `=`, anything (an empty value is the empty string)
_OVERRIDE = re.compile(r"\s*(?P<path>[^=]+?)\s*=(?P<value>.*)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Override:
    """One `--set`: the stage, the key within its table (`("lora", "r")` for a nested table) and the value."""

    stage: str
    key: tuple[str, ...]
    value: Any

    @property
    def name(self) -> str:
        """As written on the command line, without the value: `sft.lora.r`."""
        return ".".join((self.stage, *self.key))


def parse_value(raw: str) -> Any:
    """A command-line value as TOML reads it; text that is not one TOML value is a string,
    and so is a date or time (no spec field takes one; a name or a path may look like one)."""
    text = raw.strip()
    try:
        document = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # `1 \n other = 2` parses, but is not one value: keep what was typed.
    if list(document) != ["value"] or isinstance(document["value"], (date, time)):  # datetime is a date
        return text
    return document["value"]


def parse_override(raw: str) -> Override:
    """`STAGE.KEY=VALUE` (KEY may be dotted: `lora.r`); SpecError if it is not of that shape."""
    found = _OVERRIDE.fullmatch(raw)
    parts = [part.strip() for part in found["path"].split(".")] if found else []
    if found is None or len(parts) < 2 or not all(parts):
        raise SpecError([f"--set {_shown(raw)}: expected STAGE.KEY=VALUE, e.g. --set sft.max_steps=200"])
    return Override(stage=parts[0], key=tuple(parts[1:]), value=parse_value(found["value"]))


def load_spec_with_overrides(path: str | os.PathLike[str], overrides: Sequence[str]) -> PipelineSpec:
    """`load_spec(path)` with the `--set` overrides applied to its stage tables before it is validated.
    Raises SpecError: every malformed override or unknown stage, else the spec's own problems
    (a field that came from an override is named with it)."""
    problems: list[str] = []
    parsed: list[Override] = []
    for raw in overrides:
        try:
            parsed.append(parse_override(raw))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    if not parsed:
        return load_spec(path)
    source = os.fspath(path)
    text, base_dir = read_spec_file(path)
    return _validate(_overridden_text(text, parsed, source=source, base_dir=base_dir), parsed,
                     source=source, base_dir=base_dir)


def _overridden_text(text: str, overrides: Sequence[Override], *, source: str, base_dir: Path) -> str:
    """The spec's TOML with the overrides applied; a file that is not a pipeline the overrides
    can apply to (bad TOML, no [stages] tables) is reported as the loader reports it."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        document = {}
    stages = document.get("stages")
    if not isinstance(stages, dict) or not stages:
        parse_spec(text, source=source, base_dir=base_dir)  # raises: bad TOML, no stages, ...
        raise AssertionError("a spec without stage tables validated")  # pragma: no cover
    known = [name for name, table in stages.items() if isinstance(table, dict)]
    problems = []
    for override in overrides:
        if override.stage not in known:
            close = difflib.get_close_matches(override.stage, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"--set {override.name}: {source} has no stage {override.stage!r}{hint} "
                            f"(stages: {', '.join(known) or 'none'})")
            continue
        table = stages[override.stage]
        for depth, part in enumerate(override.key[:-1]):
            inner = table.setdefault(part, {})
            if not isinstance(inner, dict):
                where = ".".join((override.stage, *override.key[: depth + 1]))
                problems.append(f"--set {override.name}: {where} is not a table in {source}, so it has no keys")
                break
            table = inner
        else:
            table[override.key[-1]] = override.value
    if problems:
        raise SpecError(problems)
    try:
        header = f"{source}, with " + " ".join(f"--set {o.name}={toml_value(o.value)}" for o in overrides)
        return render_toml(document, Comments(header=_CONTROL.sub("?", header)))
    except (TypeError, ValueError) as exc:
        # A value of the file's that TOML reads but we do not write (a date): the spec rejects it anyway,
        # so let it say so.
        parse_spec(text, source=source, base_dir=base_dir)
        raise SpecError([f"{source}: cannot apply --set to this file: {exc}"]) from None


def _validate(text: str, overrides: Sequence[Override], *, source: str, base_dir: Path) -> PipelineSpec:
    try:
        return parse_spec(text, source=source, base_dir=base_dir)
    except SpecError as exc:
        raise SpecError([_name_the_override(line, overrides, source) for line in exc.problems]) from None


def _name_the_override(line: str, overrides: Sequence[Override], source: str) -> str:
    """The loader's line about a field an override set, with that override named:
    `spec.toml: stage 'sft', field 'max_steps' (--set sft.max_steps): expected an integer, ...`."""
    for override in reversed(overrides):  # the last --set of a key is the one that counts
        key = ".".join(override.key)
        prefix = f"{source}: stage {override.stage!r}, field "
        if not line.startswith(prefix):
            continue
        field, sep, rest = line[len(prefix):].partition(": ")
        named = field.strip("'\"")
        if sep and (named == key or named.startswith(key + ".")):
            return f"{prefix}{field} (--set {override.name}): {rest}"
    return line


def _shown(raw: str, limit: int = 60) -> str:
    text = _CONTROL.sub("?", raw)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


__all__ = ["Override", "load_spec_with_overrides", "parse_override", "parse_value"]
