"""The commented example pipeline `rlhf init` writes.

Generated from the spec classes, so every field shows its real default and
its pydantic description: a field added to a spec appears here by itself.
The example is data (a document and its comments) that engine.spec.toml_render
writes, as it writes every other spec.
tests/spec/test_template.py checks that it parses and covers every field.
"""

from __future__ import annotations

import typing
from typing import Any

from engine.spec.catalog import BUILTINS
from engine.spec.fields import StageSpec
from engine.spec.toml_render import Comments, TomlPath, render_toml
from engine.stages.pretrain.spec import PretrainSpec

# Help for fields whose pydantic Field has no description (yet).
_HELP = {
    "gradient_accumulation_steps": "micro-batches per optimizer step "
    "(effective batch = batch_size x this x processes)",
    "learning_rate": "peak learning rate of AdamW, reached after warm-up",
    "weight_decay": "AdamW weight decay",
    "warmup_steps": "steps of linear warm-up from 0 to learning_rate",
    "lr_scheduler": "learning-rate schedule after warm-up",
}

# Values shown (commented out) for fields that are unset by default.
_EXAMPLES: dict[str, Any] = {
    "max_documents": 10000,
    "trainer": {"optim": "adamw_torch_fused"},  # any setting of the stage's library config
}

_HEADER = """\
An rlhf-console pipeline spec ({filename}); `rlhf --help` shows how to start it.

Each [stages.NAME] table is one stage. A stage runs after the stages whose
output it uses, otherwise in the order written here.

Reference fields (from, tokenizer, data) say where a model, a tokenizer or
a data set comes from:
  "pretrain"             another stage of this file: its output
  "builtin:llama-4m"     a built-in, available offline (listed below)
  "./corpus.txt"         a local file or folder, relative to this file
  "org/name"             a Hugging Face hub id (or "hf:org/name")

Built-in models:     {models}
Built-in tokenizers: {tokenizers}
Built-in data sets:  {data}"""

_DESCRIPTION = "Pretrain a tiny Llama from scratch on the Python standard library's docstrings."


def _in_section(section: str) -> list[str]:
    """Built-in names of a section, in catalogue order (smallest model first)."""
    return [name for name, b in BUILTINS.items() if b.section == section]


def _help(cls: type[StageSpec], name: str) -> str:
    info = cls.model_fields[name]
    text = info.description or _HELP.get(name, "")
    if typing.get_origin(info.annotation) is typing.Literal:
        choices = ", ".join(str(a) for a in typing.get_args(info.annotation))
        text = f"{text}; one of: {choices}" if text else f"one of: {choices}"
    return text


def _field_order(cls: type[StageSpec]) -> list[str]:
    """kind, then the kind's own fields, then those every stage has."""
    common = [n for n in StageSpec.model_fields if n != "kind"]
    own = [n for n in cls.model_fields if n not in StageSpec.model_fields]
    return ["kind", *own, *common]


def _stage_table(path: TomlPath, cls: type[StageSpec]) -> tuple[dict[str, Any], Comments]:
    """The table at `path` (e.g. ("stages", "pretrain")) with every field of `cls`
    at its default, each with its help above it; an unset field (None) is shown
    commented out, with an example value."""
    table: dict[str, Any] = {}
    above: dict[TomlPath, str] = {}
    examples: dict[TomlPath, Any] = {}
    if cls.__doc__:
        above[path] = cls.__doc__.strip().splitlines()[0]
    for name in _field_order(cls):
        info = cls.model_fields[name]
        key = info.alias or name
        default = info.get_default(call_default_factory=True)
        table[key] = default
        if name != "kind":
            help_text = _help(cls, name)
            if default is None and "default" not in help_text:
                help_text += " (unset by default)"
            above[(*path, key)] = help_text
        if default is None:
            section = cls.reference_fields.get(key)
            example = _EXAMPLES.get(name)
            if example is None and section:
                example = f"builtin:{_in_section(section)[0]}"
            examples[(*path, key)] = example if example is not None else ""
    return table, Comments(above=above, examples=examples)


def render_example(filename: str = "pipeline.toml") -> str:
    header = _HEADER.format(
        filename=filename,
        models=", ".join(_in_section("model")),
        tokenizers=", ".join(_in_section("tokenizer")),
        data=", ".join(_in_section("data")),
    )
    stage, stage_notes = _stage_table(("stages", "pretrain"), PretrainSpec)
    document = {"name": None, "description": _DESCRIPTION, "stages": {"pretrain": stage}}
    comments = Comments(
        header=header,
        above=stage_notes.above,
        beside={("name",): "run name; default: this file's name without .toml"},
        examples={("name",): "my-run", **stage_notes.examples},
    )
    return render_toml(document, comments)


#: what `rlhf init` writes to pipeline.toml
EXAMPLE_SPEC = render_example()
