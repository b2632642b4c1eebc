"""The catalogue of built-in, offline defaults referenced as `builtin:NAME`.

Torch-free: spec validation and the console read it. The code that builds each
one lives in engine/stages/common/ and runs only inside stage workers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    name: str
    section: str  # model, tokenizer or data
    summary: str


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
                "the answer; train split; see engine/demo/task.py"),
        Builtin("demo-prompts", "data",
                "200 held-out demo-task prompts with reference answers, for evaluation and sampling"),
    ]
}


def builtins_in(section: str) -> list[str]:
    return sorted(name for name, b in BUILTINS.items() if b.section == section)
