"""The catalogue of built-in, offline defaults referenced as `builtin:NAME`.

Torch-free: spec validation and the console read it. The code that builds each
one runs only inside stage workers: the models, the tokenizer and stdlib-docs
are presets in engine/stages/common/; a data set of rows names its
`provider`, a function `module:name` returning the rows, imported only when
the data set is read (so the machinery reaches the demo's data by name, never
by importing it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Builtin:
    name: str
    section: str  # model, tokenizer or data
    summary: str
    #: for a data set of rows: the function `module:name` that returns them
    provider: str | None = None


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin("llama-1m", "model", "tiny Llama, ~1M parameters (hidden 128, 2 layers), random init"),
        Builtin("llama-4m", "model", "tiny Llama, ~4M parameters (hidden 256, 4 layers), random init"),
        Builtin("llama-10m", "model", "small Llama, ~10M parameters (hidden 384, 6 layers), random init"),
        Builtin("bpe-4k", "tokenizer", "byte-level BPE, 4096 tokens, trained locally on stdlib-docs, chat template"),
        Builtin("stdlib-docs", "data", "English docstrings of the Python standard library (~1 MB+), read from source"),
        Builtin("demo-instructions", "data",
                "4000 demo-task instructions with right answers (prompt/completion), 70% with small talk after "
                "the answer; train split; see engine/demo/task.py",
                provider="engine.demo.task:demo_instructions"),
        Builtin("demo-prompts", "data",
                "200 held-out demo-task prompts with reference answers, for evaluation and sampling",
                provider="engine.demo.task:demo_prompts"),
    ]
}


def builtins_in(section: str) -> list[str]:
    return sorted(name for name, b in BUILTINS.items() if b.section == section)


def record_providers() -> list[str]:
    """The built-in data sets of rows: those whose entry names a provider."""
    return [name for name, b in BUILTINS.items() if b.provider is not None]


def load_provider(name: str) -> Callable[[], Iterable[dict[str, Any]]]:
    """The function giving the rows of the built-in data set `name`, imported
    now; KeyError when `name` is not a data set of rows."""
    provider = BUILTINS[name].provider
    if provider is None:
        raise KeyError(name)
    module_name, _, function_name = provider.partition(":")
    function: Callable[[], Iterable[dict[str, Any]]] = getattr(importlib.import_module(module_name), function_name)
    return function
