"""Launching from a template: its main fields as a form, and back to a spec.

Textual-free. A template is a pipeline spec (TOML); the form shows the run
name and every field the template sets, with the help text of the stage's
spec model. The edited values go back into TOML (written by
engine.spec.toml_render) and through `parse_spec`, so a wrong value gets the
same one-line message naming the stage and field as in a spec file.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import PipelineSpec, parse_spec
from engine.demo.pipeline import DEMO_SPEC
from engine.spec.fields import StageSpec
from engine.spec.toml_render import render_toml
from engine.stages.registry import STAGE_KINDS

#: fields every stage kind has (processes, device, precision, seed, the launch strategy and machines);
#: a kind's template shows only its own ones
_COMMON = tuple(name for name in StageSpec.model_fields if name != "kind")


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    text: str


@dataclass(frozen=True)
class FormField:
    id: str  # "name", or "STAGE.FIELD" (the TOML key, e.g. "pretrain.from")
    label: str
    value: str
    help: str
    type: str  # int, float, str, bool, choice
    choices: tuple[str, ...] = ()
    optional: bool = False  # empty means "leave unset"


def builtin_templates() -> list[Template]:
    """The demo pipeline, then one single-stage pipeline per stage kind."""
    templates = [Template("demo", "demo: pretrain a ~4M Llama on stdlib docstrings (~1 min on CPU)", DEMO_SPEC)]
    for kind, cls in STAGE_KINDS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        title = f"{kind}: {doc[0][:1].lower()}{doc[0][1:]}" if doc else kind
        templates.append(Template(kind, title.rstrip("."), kind_template(kind)))
    return templates


def kind_template(kind: str) -> str:
    """A one-stage pipeline of `kind` with its own fields at their defaults."""
    cls = STAGE_KINDS[kind]
    table: dict[str, Any] = {"kind": kind}
    for name, info in cls.model_fields.items():
        if name == "kind" or name in _COMMON:
            continue
        default = info.get_default(call_default_factory=True)
        if default is not None:
            table[info.alias or name] = default
    return render_toml({"name": f"my-{kind}", "stages": {kind: table}})


def form_fields(template: Template) -> list[FormField]:
    document = tomllib.loads(template.text)
    fields = [FormField("name", "run name", str(document.get("name", template.name)),
                        "letters, digits, '_', '.' and '-'", "str")]
    for stage, table in document.get("stages", {}).items():
        cls = STAGE_KINDS.get(table.get("kind", ""))
        by_key = {(info.alias or name): info for name, info in cls.model_fields.items()} if cls else {}
        for key, value in table.items():
            if key == "kind":
                continue
            info = by_key.get(key)
            type_, choices, optional = _field_type(info.annotation if info else type(value))
            fields.append(FormField(
                id=f"{stage}.{key}",
                label=f"{stage}.{key}",
                value=_as_text(value),
                help=(info.description or "") if info else "",
                type=type_,
                choices=choices,
                optional=optional,
            ))
    return fields


def build_spec(template: Template, values: Mapping[str, str], *, base_dir: Path) -> PipelineSpec:
    """The template with the form's values; raises SpecError naming bad fields."""
    return parse_spec(spec_text(template, values), source=f"template {template.name}", base_dir=base_dir)


def spec_text(template: Template, values: Mapping[str, str]) -> str:
    document = tomllib.loads(template.text)
    by_id = {f.id: f for f in form_fields(template)}
    for field_id, text in values.items():
        form_field = by_id.get(field_id)
        if form_field is None:
            continue
        if field_id == "name":
            document["name"] = text.strip() or template.name
            continue
        stage, key = field_id.split(".", 1)
        table = document["stages"][stage]
        if text.strip() == "" and form_field.optional:
            table.pop(key, None)
        else:
            table[key] = _parse_value(text, form_field.type)
    return render_toml(document)


def _field_type(annotation: Any) -> tuple[str, tuple[str, ...], bool]:
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        annotation = rest[0] if len(rest) == 1 else str
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", tuple(str(a) for a in typing.get_args(annotation)), optional
    if annotation is bool:
        return "bool", ("true", "false"), optional
    if annotation is int:
        return "int", (), optional
    if annotation is float:
        return "float", (), optional
    return "str", (), optional


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_value(text: str, type_: str) -> Any:
    """Typed where the text allows, else the text itself, for parse_spec to reject by name."""
    text = text.strip()
    try:
        if type_ == "int":
            return int(text)
        if type_ == "float":
            return float(text)
    except ValueError:
        return text
    if type_ == "bool" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
