"""The built-in demo pipeline (`rlhf demo`): the whole InstructGPT loop, offline, on a CPU.

raw text -> pretrain -> SFT -> sample 4 answers per prompt -> rank them ->
reward model -> PPO against it (and DPO on the same rankings, as the offline
alternative) -> an arena on held-out prompts where the judge compares SFT, PPO
and DPO answers blind, in pairs.

In the console the person ranks the first answers themselves and can hand
the rest to the demo judge (`J`); headless, the judge ranks them all. Either
way the judge's rankings are recorded as `judge:demo`, never as the person.
`rlhf demo --headless` ends with the report (`rlhf report RUN`).

The settings are sized for two CPU cores: a ~4M-parameter Llama, a few hundred
steps per stage. The same spec with a hub model, LoRA and larger numbers is a
real pipeline (README: "Bring your own model and data").
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from engine import PipelineSpec, parse_spec

DEMO_SPEC = """\
# rlhf-console demo: the InstructGPT recipe on a tiny Llama, offline, on a CPU.
name = "demo"
description = "Pretrain, SFT, rank, reward model, PPO and DPO on a ~4M-parameter Llama, then an arena"

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
eval_prompts = "builtin:demo-prompts"  # held-out prompts answered while it trains, scored by the judge
max_steps = 800
batch_size = 32
learning_rate = 1e-3
sample_every = 100

[stages.sample]                  # 4 answers to each of 512 training prompts, to be ranked
kind = "sample"
from = "sft"
prompts = "builtin:demo-instructions"
max_prompts = 512
responses_per_prompt = 4
temperature = 1.0
max_new_tokens = 24

[stages.rank]                    # who ranks them: the demo judge (recorded as judge:demo)
kind = "rank"
from = "sample"
judge = "demo"

[stages.reward]                  # a reward model learned from the rankings (all C(4,2) pairs of a prompt together)
kind = "reward"
from = "sft"
preferences = "rank"
max_steps = 200
batch_size = 16
learning_rate = 1e-4
eval_every = 50

[stages.ppo]                     # PPO against the reward model, with a KL leash to the SFT model
kind = "ppo"
from = "sft"
reward_model = "reward"
prompts = "builtin:demo-instructions"
updates = 30
rollout_batch_size = 32
minibatch_size = 16
ppo_epochs = 2
learning_rate = 1e-5             # gently: what the rankings teach is learned in a few updates; more drifts from SFT
max_new_tokens = 24
beta = 0.2
sample_every = 10

[stages.dpo]                     # DPO: the offline alternative, on the same rankings
kind = "dpo"
from = "sft"
preferences = "rank"
beta = 0.1
sft_weight = 1.0                 # RPO: keep the chosen answers likely (plain DPO lowers chosen and rejected alike)
max_steps = 150
batch_size = 16
learning_rate = 5e-5
eval_every = 50
sample_every = 50

[stages.arena_answers]           # SFT, PPO and DPO answer the same held-out prompts
kind = "sample"
from = ["sft", "ppo", "dpo"]
prompts = "builtin:demo-prompts"
max_prompts = 100
responses_per_prompt = 3
temperature = 0.3
max_new_tokens = 24

[stages.arena]                   # the judge compares them blind, in pairs: win rates and a leaderboard
kind = "rank"
from = "arena_answers"
pairwise = true
judge = "demo"
"""

#: the line that makes the judge rank the demo's samples; without it, people do
_JUDGE_LINE = 'from = "sample"\njudge = "demo"\n'


#: `rlhf demo --quick`: the same loop with fewer steps, about half the time
QUICK = {
    "pretrain": {"max_steps": 150},
    "sft": {"max_steps": 400, "sample_every": 200},
    "sample": {"max_prompts": 128},
    "reward": {"max_steps": 80},
    "ppo": {"updates": 16, "learning_rate": 2e-5},
    "dpo": {"max_steps": 60},
    "arena_answers": {"max_prompts": 40},
}


def demo_spec(*, people_rank: bool = False, quick: bool = False) -> PipelineSpec:
    """The demo pipeline; with `people_rank` its rank stage waits for people
    (the console then opens the rank screen, and `J` hands the rest to the judge);
    `quick` shortens every stage (QUICK)."""
    text = DEMO_SPEC
    if people_rank:
        text = text.replace(_JUDGE_LINE, 'from = "sample"\n', 1)
    if quick:
        text = _with_settings(text, QUICK, name="demo-quick")
    return parse_spec(text, source="builtin:demo", base_dir=Path.cwd())


def _with_settings(text: str, settings: dict[str, dict[str, Any]], *, name: str) -> str:
    """The spec with some stage settings replaced (comments are not kept)."""
    document = tomllib.loads(text)
    document["name"] = name
    for stage, values in settings.items():
        document["stages"][stage].update(values)
    lines = [f"{key} = {json.dumps(value)}" for key, value in document.items() if key != "stages"]
    for stage, table in document["stages"].items():
        lines.append(f"\n[stages.{stage}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"
