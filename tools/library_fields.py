"""Writes engine/spec/library_fields.py: the settings of the library configs a
`[stages.NAME.trainer]` or `[stages.NAME.lora]` table may fill, known without
importing the libraries.

Spec validation runs in the console and the CLI, which never import torch
and friends (ARCHITECTURE.md, the import contracts in pyproject.toml), yet a
mistyped pass-through key should fail there, before anything trains. So the
field names (and a coarse TOML type per field) are read here, once, from the
installed transformers, trl, peft, torch and accelerate, and checked into the
repository. tests/spec/test_library_fields.py regenerates the text and
compares it with the file, so a library upgrade cannot leave it stale.

    .venv/bin/python tools/library_fields.py          # rewrite the file
    .venv/bin/python tools/library_fields.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import sys
import types
import typing
from importlib.metadata import version
from pathlib import Path
from pprint import pformat
from typing import Any

TARGET = Path(__file__).resolve().parent.parent / "engine" / "spec" / "library_fields.py"
LIBRARIES = ("transformers", "trl", "peft", "accelerate", "torch")

HEADER = '''"""The settings of the library configs a pass-through table may fill: GENERATED, do not edit.

Written by tools/library_fields.py from the installed libraries (VERSIONS below);
tests/spec/test_library_fields.py fails when it is stale: run that script again.
Torch-free on purpose: spec validation reads it in the console and the CLI.

CONFIGS: config name -> field -> (the TOML types it takes, the strings it is limited to).
Types: bool, int, float, str, array, table; "any" where the annotation says no more.
trl's configs extend TransformersArguments: OWN_FIELDS holds only what each adds or
types differently, and CONFIGS lays that over its base (BASES).
"""

from __future__ import annotations

Field = tuple[tuple[str, ...], tuple[str, ...]]

#: the library versions these fields were read from
VERSIONS: dict[str, str] = {{
{versions_dict}}}

#: config -> the config whose fields it extends
BASES: dict[str, str] = {{
{bases_dict}}}

OWN_FIELDS: dict[str, dict[str, Field]] = {{
'''

FOOTER = """
CONFIGS: dict[str, dict[str, Field]] = {
    name: {**(OWN_FIELDS[BASES[name]] if name in BASES else {}), **own} for name, own in OWN_FIELDS.items()
}
"""


def _types(annotation: Any) -> tuple[set[str], list[str], bool]:
    """(TOML types, allowed strings, whether the strings are a closed set) of one annotation."""
    if annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return {"any"}, [], False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        kinds: set[str] = set()
        choices: list[str] = []
        for member in members:
            member_kinds, member_choices, _ = _types(member)
            kinds |= member_kinds
            choices += member_choices
        # A plain `str` beside a Literal opens the set; beside an Enum it does not:
        # TrainingArguments turns `optim: OptimizerNames | str` into the enum and fails on anything else.
        closed = bool(choices) and (any(_is_str_enum(m) for m in members) or str not in members)
        return kinds, choices if closed else [], closed
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {_scalar(type(v)) for v in values}
        return kinds, [v for v in values if isinstance(v, str)], True
    if annotation is type(None):
        return set(), [], True
    if _is_str_enum(annotation):
        return {"str"}, [member.value for member in annotation], True
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset):
        return {"array"}, [], False
    if origin is dict or annotation is dict:
        return {"table"}, [], False
    if isinstance(annotation, type) and annotation in (bool, int, float, str):
        return {_scalar(annotation)}, [], False
    return {"any"}, [], False  # an object TOML cannot spell, or a type we do not know


def _is_str_enum(annotation: Any) -> bool:
    return (isinstance(annotation, type) and issubclass(annotation, enum.Enum)
            and all(isinstance(m.value, str) for m in annotation))


def _scalar(kind: type) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(kind, "any")


def _resolved(owner: Any, name: str, annotation: Any) -> Any:
    """A string annotation (from __future__ import annotations) evaluated in its module; Any if it cannot be."""
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules[owner.__module__]
    try:
        return eval(annotation, dict(vars(module)))  # the library's own annotation text
    except (NameError, AttributeError, SyntaxError, TypeError):  # a name imported only for type checking
        return Any


def _entry(owner: Any, name: str, annotation: Any, default: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    resolved = _resolved(owner, name, annotation)
    if resolved is inspect.Parameter.empty:
        resolved = type(default) if default not in (None, inspect.Parameter.empty) else Any
    kinds, choices, closed = _types(resolved)
    if "any" in kinds:
        kinds = {"any"}
    if "float" in kinds:
        kinds.add("int")  # TOML writes 1 for 1.0
    return tuple(sorted(kinds)), tuple(choices) if closed else ()


def dataclass_fields(cls: type) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """The init fields of a config dataclass (private ones left out)."""
    found = {}
    for f in dataclasses.fields(cls):
        if f.init and not f.name.startswith("_"):
            owner = next(k for k in cls.__mro__ if f.name in getattr(k, "__annotations__", {}))
            found[f.name] = _entry(owner, f.name, f.type, f.default)
    return found


def signature_fields(function: Any, owner: Any) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """The keyword parameters of a constructor (AdamW, Accelerator)."""
    found = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        found[name] = _entry(owner, name, parameter.annotation, parameter.default)
    return found


def configs() -> dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]:
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig
    from transformers import TrainingArguments
    from trl import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, RLOOConfig, SFTConfig

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # its import warning says nothing here
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.online_dpo import OnlineDPOConfig
    from trl.experimental.orpo import ORPOConfig

    return {
        **{cls.__name__: dataclass_fields(cls)
           for cls in (TrainingArguments, SFTConfig, RewardConfig, DPOConfig, KTOConfig, ORPOConfig, CPOConfig,
                       GRPOConfig, RLOOConfig, OnlineDPOConfig, LoraConfig)},
        "AdamW": signature_fields(torch.optim.AdamW.__init__, torch.optim.AdamW),
        "Accelerator": signature_fields(Accelerator.__init__, Accelerator),
    }


#: trl's configs subclass TrainingArguments: listed once there, their own additions beside them
TRAINER_SUBCLASSES = ("SFTConfig", "RewardConfig", "DPOConfig", "KTOConfig", "ORPOConfig", "CPOConfig", "GRPOConfig",
                      "RLOOConfig", "OnlineDPOConfig")


def render() -> str:
    versions = {name: version(name) for name in LIBRARIES}
    found = configs()
    base = found["TrainingArguments"]
    bases = {name: "TrainingArguments" for name in TRAINER_SUBCLASSES}
    own = {name: {k: v for k, v in fields.items() if name not in bases or base.get(k) != v}
           for name, fields in found.items()}
    text = HEADER.format(versions_dict="".join(f"    {k!r}: {v!r},\n" for k, v in versions.items()),
                         bases_dict="".join(f"    {k!r}: {v!r},\n" for k, v in bases.items()))
    for config, fields in own.items():
        text += f"    {config!r}: {{\n"
        for name, entry in sorted(fields.items()):
            # One field per entry, wrapped to the house's 120 columns (a long list of choices).
            key = f"        {name!r}:"
            one_line = f"{key} {entry!r},"
            if len(one_line) <= 120:
                text += one_line + "\n"
            else:
                lines = pformat(entry, width=120 - 13, compact=True).splitlines()
                text += key + "\n" + "".join(f"            {line}\n" for line in lines).rstrip("\n") + ",\n"
        text += "    },\n"
    return text + "}\n" + FOOTER


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        stale = not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text
        if stale:
            print(f"{TARGET} is stale: run {Path(__file__).name} again", file=sys.stderr)
        return int(stale)
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
