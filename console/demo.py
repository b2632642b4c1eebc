"""The built-in demo pipeline (`rlhf demo`).

For now it pretrains a ~4M-parameter Llama on the standard library's
docstrings: about a minute on two CPU cores. Later issues grow it into the
whole loop (SFT, ranking, reward model, PPO and DPO).
"""

from __future__ import annotations

from pathlib import Path

from engine import PipelineSpec, parse_spec

DEMO_SPEC = """\
# rlhf-console demo: pretraining a tiny Llama from scratch, offline.
name = "demo"
description = "Pretrain a ~4M-parameter Llama on the Python standard library's docstrings"

[stages.pretrain]
kind = "pretrain"
from = "builtin:llama-4m"      # random init from a preset config
tokenizer = "builtin:bpe-4k"   # byte-level BPE trained locally in about a second
data = "builtin:stdlib-docs"   # English docstrings read from the stdlib's source
block_size = 128
batch_size = 8
max_steps = 300
learning_rate = 2e-3
warmup_steps = 20
eval_every = 50
save_every = 100
"""


def demo_spec() -> PipelineSpec:
    return parse_spec(DEMO_SPEC, source="builtin:demo", base_dir=Path.cwd())
