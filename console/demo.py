"""The built-in demo pipeline (`rlhf demo`).

It pretrains a ~4M-parameter Llama on the standard library's docstrings,
fine-tunes it on the demo task's instructions, samples four answers to each of
64 prompts and has the demo judge rank them: about five minutes on two CPU
cores. The reward model, PPO and DPO join it as they land.
"""

from __future__ import annotations

from pathlib import Path

from engine import PipelineSpec, parse_spec

DEMO_SPEC = """\
# rlhf-console demo: the InstructGPT recipe on a tiny Llama, offline, on a CPU.
name = "demo"
description = "Pretrain a ~4M-parameter Llama, fine-tune it on instructions, sample answers and rank them"

[stages.pretrain]                # next-token prediction on raw text
kind = "pretrain"
from = "builtin:llama-4m"        # random init from a preset config
tokenizer = "builtin:bpe-4k"     # byte-level BPE trained locally in about a second
data = "builtin:stdlib-docs"     # English docstrings read from the stdlib's source
block_size = 128
batch_size = 8
max_steps = 300
learning_rate = 2e-3
warmup_steps = 20
eval_every = 50
save_every = 100

[stages.sft]                     # supervised fine-tuning on the demo task's instructions
kind = "sft"
from = "pretrain"
data = "builtin:demo-instructions"
eval_prompts = "builtin:demo-prompts"  # answered while it trains; scored by the demo judge
max_steps = 400
batch_size = 32
learning_rate = 1e-3
sample_every = 100

[stages.sample]                  # K answers per prompt, to be ranked
kind = "sample"
from = "sft"
prompts = "builtin:demo-prompts"
max_prompts = 64
responses_per_prompt = 4
temperature = 1.0
max_new_tokens = 32

[stages.rank]                    # the demo judge ranks them (recorded as judge:demo, not as you)
kind = "rank"
from = "sample"
judge = "demo"
"""


def demo_spec() -> PipelineSpec:
    return parse_spec(DEMO_SPEC, source="builtin:demo", base_dir=Path.cwd())
