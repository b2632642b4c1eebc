"""Loading a pipeline spec: TOML in, a validated `PipelineSpec` out.

    name = "tiny"                 # optional run name; default: the file's stem
    description = "..."           # optional
    [defaults]                    # optional: what every stage takes unless it sets it
    report_to = ["tensorboard"]
    [stages.pretrain]
    kind = "pretrain"
    from = "builtin:llama-4m"
    [stages.more]
    kind = "pretrain"
    from = "pretrain"             # another stage's output
    data = "./my_corpus.txt"      # relative to the spec file's folder

Every problem found is collected and raised as one `SpecError`, one line per
problem naming the file, the stage and the field, so a person fixes a spec in
one pass instead of one error per attempt. This module reads files and never
writes any; it imports nothing heavier than pydantic because every CLI start
runs it.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.errors import SpecError
from engine.spec.fields import STORED, StageSpec
from engine.spec.pass_through import stage_level_hint
from engine.spec.refs import STAGE_NAME, Ref, RefError, resolve_ref

# As a module, read at call time (tests patch registry.PLANNED_KINDS).
from engine.stages import registry

TOP_LEVEL_KEYS = ("name", "description", "defaults", "stages")
#: what a [defaults] table may set: a stage that does not set it itself takes it from there
DEFAULTS_KEYS = ("report_to",)
RUN_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: its stages in execution order, with canonical references."""

    name: str
    description: str | None
    source: str  # the file it was read from, as given (used in messages)
    text: str  # the TOML exactly as submitted
    base_dir: Path  # where relative paths were resolved from
    #: stage name -> validated spec, dependencies first, otherwise file order
    stages: Mapping[str, StageSpec]
    #: stage name -> the stage its `from` names, if it names one
    parents: Mapping[str, str | None] = field(default_factory=dict)
    #: stage name -> every stage its reference fields name, in execution order
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # read-only views, so no one reorders or swaps a validated stage
        for name in ("stages", "parents", "dependencies"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def __reduce__(self) -> tuple[Any, ...]:  # mappingproxy cannot be pickled; dicts can
        return (PipelineSpec, (self.name, self.description, self.source, self.text, self.base_dir,
                               dict(self.stages), dict(self.parents), dict(self.dependencies)))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-able resolved specs per stage, in execution order (for the run row)."""
        return {
            name: spec.model_dump(by_alias=True, mode="json") for name, spec in self.stages.items()
        }


def stage_spec_from_dict(config: Mapping[str, Any]) -> StageSpec:
    """Rebuild a stage's spec from `PipelineSpec.to_dict()[name]` (e.g. in a worker)."""
    registry.load_stage_plugins()
    return registry.STAGE_KINDS[config["kind"]].model_validate(dict(config), context=STORED)


def load_spec(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read and validate a pipeline spec file; raises SpecError."""
    text, base_dir = read_spec_file(path)
    return parse_spec(text, source=os.fspath(path), base_dir=base_dir)


def read_spec_file(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """A spec file's text and the folder its relative paths start at; SpecError if it cannot be read."""
    source = os.fspath(path)
    file = Path(source).expanduser()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SpecError([f"{source}: no such file"]) from None
    except IsADirectoryError:
        raise SpecError([f"{source}: is a folder, expected a pipeline spec file (.toml)"]) from None
    except OSError as exc:
        raise SpecError([f"{source}: cannot read ({exc.strerror})"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{source}: not UTF-8 text (byte {exc.start})"]) from None
    return text, file.resolve().parent


def parse_spec(text: str, *, source: str, base_dir: Path) -> PipelineSpec:
    """Validate the TOML of a pipeline spec; relative paths start at `base_dir`.
    The stage plugins (RLHF_STAGE_PLUGINS) are loaded first: a spec may use their kinds."""
    registry.load_stage_plugins()
    return _Loader(text, source=source, base_dir=Path(base_dir).expanduser().resolve()).load()


# --- the loader ---------------------------------------------------------------


class _Loader:
    """One validation pass, collecting every problem before raising."""

    def __init__(self, text: str, *, source: str, base_dir: Path) -> None:
        self.text = text
        self.source = source
        self.base_dir = base_dir
        self.problems: list[tuple[tuple[int, int], str]] = []  # (sort key, line)
        self.tables: dict[str, dict[str, Any]] = {}

    # Problems sort by stage (file order) and by key within the table, so
    # the report reads top to bottom like the file. File-level ones first.
    def problem(self, message: str, *, stage: str | None = None, key: str | None = None,
                order: tuple[int, int] = (-1, 0)) -> None:
        where = self.source
        if stage is not None:
            where += f": stage {stage!r}"
            if key is not None:
                where += f", field {key!r}"
        elif key is not None:
            where += f": field {key!r}"
        self.problems.append((order, f"{where}: {message}"))

    def fail(self) -> SpecError:
        return SpecError([line for _, line in sorted(self.problems, key=lambda p: p[0])])

    def load(self) -> PipelineSpec:
        try:
            document = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError([f"{self.source}: {_toml_error(exc)}"]) from None

        name, description = self.check_top_level(document)
        defaults = self.check_defaults(document)
        tables = {stage: {**defaults, **table} for stage, table in self.stage_tables(document).items()}
        self.tables = tables
        stage_names = list(tables)

        specs: dict[str, StageSpec] = {}
        refs: dict[str, dict[str, Ref]] = {}  # stage -> alias -> resolved
        for index, (stage, table) in enumerate(tables.items()):
            spec, stage_refs = self.check_stage(index, stage, table, stage_names)
            if spec is not None:
                specs[stage] = spec
            if stage_refs is not None:
                refs[stage] = stage_refs

        dependencies = {
            stage: _unique(r.value for r in stage_refs.values() if r.scheme == "stage")
            for stage, stage_refs in refs.items()
        }
        self.check_cycles(stage_names, dependencies, refs)
        if self.problems:
            raise self.fail()

        order = _execution_order(stage_names, dependencies)
        parents = {
            stage: (refs[stage]["from"].value
                    if "from" in refs[stage] and refs[stage]["from"].scheme == "stage" else None)
            for stage in order
        }
        return PipelineSpec(
            name=name,
            description=description,
            source=self.source,
            text=self.text,
            base_dir=self.base_dir,
            stages={stage: specs[stage] for stage in order},
            parents=parents,
            dependencies={
                stage: tuple(d for d in order if d in dependencies[stage]) for stage in order
            },
        )

    # --- the file ---------------------------------------------------------

    def check_top_level(self, document: dict[str, Any]) -> tuple[str, str | None]:
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                self.problem(
                    f"unknown top-level key {key!r}{_did_you_mean(key, TOP_LEVEL_KEYS)} "
                    f"(allowed: {', '.join(TOP_LEVEL_KEYS)}; stage settings go in [stages.NAME])"
                )

        name = document.get("name")
        if name is None:
            name = _default_run_name(self.source)
        elif not isinstance(name, str):
            self.problem(f"expected a run name (a string), got {_describe(name)}", key="name")
        elif not RUN_NAME.fullmatch(name) or name.isdigit():
            self.problem(
                f"expected a run name of letters, digits, '_', '.' and '-' "
                f"that is not only digits, got {_quote(name)}",
                key="name",
            )

        description = document.get("description")
        if description is not None and not isinstance(description, str):
            self.problem(f"expected a string, got {_describe(description)}", key="description")
        return name, description

    def check_defaults(self, document: dict[str, Any]) -> dict[str, Any]:
        """The [defaults] table (`report_to = ["tensorboard"]`): settings every stage takes unless its
        own table sets them; checked here once, so a bad one is one line, not one per stage."""
        table = document.get("defaults", {})
        if not isinstance(table, dict):
            self.problem(f"expected a [defaults] table, got {_describe(table)}", key="defaults")
            return {}
        defaults: dict[str, Any] = {}
        for key, value in table.items():
            if key not in DEFAULTS_KEYS:
                self.problem(f"not a setting [defaults] takes{_did_you_mean(key, DEFAULTS_KEYS)} "
                             f"(it takes: {', '.join(DEFAULTS_KEYS)})", key=f"defaults.{key}")
                continue
            try:
                StageSpec.model_validate({"kind": "defaults", key: value})
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    field_key = ".".join(str(part) for part in error["loc"])
                    self.problem(_human_error(error, StageSpec, field_key), key=f"defaults.{field_key}")
                continue
            defaults[key] = value
        return defaults

    def stage_tables(self, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
        example = 'e.g. [stages.pretrain] with kind = "pretrain"'
        if "stages" not in document:
            self.problem(f"no [stages] table; a pipeline needs at least one stage, {example}")
            return {}
        stages = document["stages"]
        if isinstance(stages, list):
            self.problem(f"expected [stages.NAME] tables, got an array ([[stages]] or stages = [...]); {example}")
            return {}
        if not isinstance(stages, dict):
            self.problem(f"expected a [stages] table of [stages.NAME] tables, got {_describe(stages)}",
                         key="stages")
            return {}
        if not stages:
            self.problem(f"the [stages] table is empty; a pipeline needs at least one stage, {example}")
            return {}

        tables: dict[str, dict[str, Any]] = {}
        for index, (stage, table) in enumerate(stages.items()):
            if not STAGE_NAME.fullmatch(stage):
                self.problem(
                    "stage names may only contain letters, digits, '_' and '-'",
                    stage=stage, order=(index, -1),
                )
            if not isinstance(table, dict):
                self.problem(
                    f"expected a table [stages.{stage}], got {_describe(table)}",
                    stage=stage, order=(index, -1),
                )
                continue
            tables[stage] = table
        return tables

    # --- one stage --------------------------------------------------------

    def check_stage(
        self, index: int, stage: str, table: dict[str, Any], stage_names: list[str]
    ) -> tuple[StageSpec | None, dict[str, Ref] | None]:
        """The validated spec (None if invalid) and the references that resolved
        (None if the kind is unknown, so nothing is known about its fields)."""
        keys = list(table)

        def report(message: str, key: str | None) -> None:
            # A nested table's field (`lora.r`) sorts with its table.
            top = key.split(".")[0] if key is not None else None
            position = keys.index(top) if top in keys else len(keys)
            self.problem(message, stage=stage, key=key, order=(index, position))

        kind = table.get("kind")
        known = ", ".join(registry.STAGE_KINDS)
        if kind is None:
            report(f"missing; expected one of the stage kinds: {known}", "kind")
            return None, None
        if not isinstance(kind, str):
            report(f"expected a stage kind (one of: {known}), got {_describe(kind)}", "kind")
            return None, None
        if kind not in registry.STAGE_KINDS:
            if kind in registry.PLANNED_KINDS:
                coming = ", ".join(k for k in registry.PLANNED_KINDS if k not in registry.STAGE_KINDS)
                report(f"kind {kind!r} is not available in this version (coming: {coming})", "kind")
            else:
                report(f"unknown kind {kind!r}{_did_you_mean(kind, [*registry.STAGE_KINDS, *registry.PLANNED_KINDS])} "
                       f"(known kinds: {known})", "kind")
            return None, None
        cls = registry.STAGE_KINDS[kind]

        # TOML keys are the aliases (`from`); a Python name (`from_`) is not a key.
        allowed = [f.alias or name for name, f in cls.model_fields.items()]
        data: dict[str, Any] = {}
        for key, value in table.items():
            if key in allowed:
                data[key] = value
            else:
                # A Hugging Face name (save_steps) is told what this spec calls it before difflib guesses.
                hint = stage_level_hint(kind, key, allowed) or _did_you_mean(key, allowed)
                report(f"unknown field for a {kind} stage{hint}", key)

        for alias in cls.path_fields:
            value = data.get(alias)
            if isinstance(value, str) and value.strip() and not Path(value.strip()).expanduser().is_absolute():
                data[alias] = str((self.base_dir / value.strip()).resolve())

        # The demo task's data only for a demo model; a user's model must be given its own.
        for alias, demo_value in cls.demo_defaults.items():
            if data.get(alias) is not None:
                continue
            builtin = self.starts_from_builtin_model(stage)
            if builtin:
                data[alias] = demo_value
            elif builtin is not None:  # None: `from` is missing or wrong, which is reported on its own
                report(f"required for a model of your own: the {alias} to use (a file, a datasets folder or a "
                       f"hub id); only a built-in demo model defaults to the demo's ({demo_value})", alias)

        # References, including defaults, so the stored spec is canonical throughout.
        # An array of references (`from = ["a", "b"]`) is keyed `from[0]`, `from[1]`.
        refs: dict[str, Ref] = {}
        ok = True
        for alias, section in cls.reference_fields.items():
            value = data.get(alias, _default(cls, alias))
            if isinstance(value, list) and alias in cls.reference_list_fields:
                items = list(value)
                for position, item in enumerate(value):
                    if not isinstance(item, str):
                        continue  # pydantic reports it
                    try:
                        ref = resolve_ref(item, section=section, stages=stage_names,
                                          base_dir=self.base_dir, current_stage=stage)
                    except RefError as exc:
                        report(f"item {position + 1}: {exc}", alias)
                        ok = False
                        continue
                    refs[f"{alias}[{position}]"] = ref
                    items[position] = str(ref)
                data[alias] = items
                continue
            if not isinstance(value, str):
                continue  # None (the field's own default), or a type error pydantic reports
            try:
                ref = resolve_ref(value, section=section, stages=stage_names,
                                  base_dir=self.base_dir, current_stage=stage)
            except RefError as exc:
                report(str(exc), alias)
                ok = False
                continue
            refs[alias] = ref
            data[alias] = str(ref)

        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                # A field of a nested table ([stages.NAME.lora]) is named by its path: `lora.r`.
                field_key = ".".join(str(part) for part in error["loc"]) or None
                if error["type"] == "pass_through":  # a [trainer] or [lora] table: one line per bad key
                    for key, problem in error["ctx"]["problems"]:
                        report(problem, f"{field_key}.{key}" if field_key else key)
                    continue
                report(_human_error(error, cls, field_key), field_key)
            self.report_skipped_extras(exc, cls, data, report)
            return None, refs
        return (spec if ok else None), refs

    @staticmethod
    def report_skipped_extras(exc: ValidationError, cls: type[StageSpec], data: dict[str, Any],
                              report: typing.Callable[[str, str | None], None]) -> None:
        """A nested table that passes extra keys through ([lora]) checks them after its fields,
        which pydantic skips when a field fails: so that one pass still names every problem,
        its extras are checked here then."""
        checked = {error["loc"][:1] for error in exc.errors() if error["type"] == "pass_through"}
        for alias, value in data.items():
            model = _model_at(cls, alias)
            extra_problems = getattr(model, "extra_problems", None)
            if (alias,) in checked or not isinstance(value, dict) or extra_problems is None:
                continue
            for key, problem in extra_problems(value):
                report(problem, f"{alias}.{key}")

    def starts_from_builtin_model(self, stage: str) -> bool | None:
        """Whether every model `stage` starts from is a built-in preset (the
        demo's), directly or through the stages of this pipeline it comes
        from; None when that cannot be told: a `from` that is missing, not a
        reference, names no model, or goes round in a cycle."""
        stage_names = list(self.tables)

        def origin_of(name: str, path: frozenset[str]) -> bool | None:
            if name in path:  # a cycle
                return None
            path = path | {name}
            table = self.tables.get(name, {})
            origin = table.get("from")
            kind_name = table.get("kind")
            kind = registry.STAGE_KINDS.get(kind_name) if isinstance(kind_name, str) else None
            if kind is None:
                return None
            if origin is None:
                origin = _default(kind, "from")  # sft's `from` defaults to builtin:llama-4m
            items = origin if isinstance(origin, list) else [origin]
            verdicts = [item_origin(name, kind, item, path) for item in items]
            if not verdicts or None in verdicts:
                return None
            return all(verdicts)

        def item_origin(name: str, kind: type[StageSpec], item: object, path: frozenset[str]) -> bool | None:
            if not isinstance(item, str):
                return None
            try:
                ref = resolve_ref(item, section=kind.reference_fields.get("from", "model"), stages=stage_names,
                                  base_dir=self.base_dir, current_stage=name)
            except RefError:
                return None
            if ref.scheme == "builtin":
                return True
            return origin_of(ref.value, path) if ref.scheme == "stage" else False

        return origin_of(stage, frozenset())

    # --- the graph --------------------------------------------------------

    def check_cycles(self, stage_names: list[str], dependencies: dict[str, tuple[str, ...]],
                     refs: dict[str, dict[str, Ref]]) -> None:
        position = {name: i for i, name in enumerate(stage_names)}
        for cycle in _cycles(stage_names, dependencies):
            first, second = cycle[0], cycle[1]
            via = next(alias for alias, r in refs[first].items() if r == Ref("stage", second))
            self.problem(
                f"stages {' -> '.join(cycle)} form a cycle; each stage can only use "
                "the output of stages that do not need its own",
                stage=first, key=via, order=(position[first], 1 << 30),
            )


def _execution_order(stage_names: list[str], dependencies: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Dependencies first, otherwise file order (a stable topological sort)."""
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(stage_names):
        for stage in stage_names:
            if stage not in placed and all(d in placed for d in dependencies[stage]):
                order.append(stage)
                placed.add(stage)
                break
        else:  # pragma: no cover - cycles are rejected before
            raise AssertionError("cycle in a validated pipeline")
    return order


def _cycles(stage_names: list[str], dependencies: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """One cycle per strongly connected group of stages, each starting and
    ending at its stage that comes first in the file (a -> b -> a)."""
    graph = {s: [d for d in dependencies.get(s, ()) if d in dependencies and d != s]
             for s in stage_names if s in dependencies}
    # Tarjan's strongly connected components; specs are small, recursion is fine.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in graph:
        if node not in index:
            visit(node)

    cycles = []
    for group in groups:
        start = min(group, key=stage_names.index)
        cycles.append(_path_back(start, graph, group))
    return sorted(cycles, key=lambda c: stage_names.index(c[0]))


def _path_back(start: str, graph: Mapping[str, list[str]], group: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected group."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in group:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError("no cycle in a strongly connected group")  # pragma: no cover


# --- messages -------------------------------------------------------------------


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        message = message[: found.start()]
        return f"line {found[1]}, column {found[2]}: invalid TOML: {message}"
    found = re.search(r"\s*\(at end of document\)$", message)
    if found:
        return f"at the end of the file: invalid TOML: {message[: found.start()]}"
    return f"invalid TOML: {message}"


def _default_run_name(source: str) -> str:
    stem = Path(source).stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "run"
    return f"run-{name}" if name.isdigit() else name


def _default(cls: type[StageSpec], alias: str) -> Any:
    for name, f in cls.model_fields.items():
        if (f.alias or name) == alias:
            return f.get_default(call_default_factory=True)
    return None


def _quote(value: str, limit: int = 60) -> str:
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return repr(value)


def _describe(value: Any) -> str:
    """A TOML value in words: `the string '100'`, `the integer 3`, `a table`."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_quote(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return f"the date/time {value.isoformat()}"
    return f"a {type(value).__name__}"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float) and value.is_integer():
        return repr(int(value))  # a bound of 0.0 reads as 0
    if isinstance(value, (int, float)):
        return repr(value)
    return _describe(value)


def _did_you_mean(word: str, choices: Any) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false",
}
_BOUND_WORDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be greater than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def _human_error(error: Any, cls: type[StageSpec], key: str | None) -> str:
    """One pydantic error as a line a person can act on."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in _TYPE_WORDS:
        expected = _TYPE_WORDS[kind]
        if kind == "string_type" and key in cls.reference_fields:
            expected += " (a stage name, builtin:NAME, a path or a hub id)"
        return f"expected {expected}, got {_describe(value)}"
    if kind in _BOUND_WORDS:
        name, words = _BOUND_WORDS[kind]
        return f"{words} {_plain(ctx.get(name))}, got {_plain(value)}"
    if kind == "literal_error":
        message = f"expected {ctx.get('expected', 'one of the allowed values')}, got {_describe(value)}"
        choices = _literal_choices(cls, key)
        if isinstance(value, str) and choices:
            message += _did_you_mean(value, choices)
        return message
    if kind == "finite_number":
        return f"expected a finite number, got {_plain(value)}"
    if kind == "missing":
        return "missing; this field is required"
    if kind == "extra_forbidden" and key is not None:  # a key of a nested table
        table, _, name = key.rpartition(".")
        model = _model_at(cls, table)
        allowed = [f.alias or n for n, f in model.model_fields.items()] if model else []
        return f"unknown field for a {table} table{_did_you_mean(name, allowed)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a table ([stages.NAME.{key}]), got {_describe(value)}"
    message = str(error.get("msg", "invalid value"))
    return f"{message[:1].lower()}{message[1:]}, got {_describe(value)}"


def _literal_choices(cls: type[StageSpec], key: str | None) -> list[str]:
    table, _, key = (key or "").rpartition(".")
    model = _model_at(cls, table)
    for name, f in (model.model_fields.items() if model else ()):
        if (f.alias or name) == key and typing.get_origin(f.annotation) is typing.Literal:
            return [str(a) for a in typing.get_args(f.annotation)]
    return []


def _model_at(cls: type[BaseModel], path: str) -> type[BaseModel] | None:
    """The model of a nested table (`lora` -> LoraSpec); `cls` itself for ""."""
    model = cls
    for part in filter(None, path.split(".")):
        field_info = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field_info is None:
            return None
        annotation = field_info.annotation
        members = typing.get_args(annotation) or (annotation,)
        nested = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
