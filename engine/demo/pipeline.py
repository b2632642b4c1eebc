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

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine import PipelineSpec, parse_spec
from engine.spec.toml_render import Comments, render_toml

#: the demo pipeline as data; DEMO_SPEC is its text, with DEMO_COMMENTS
DEMO_DOCUMENT: dict[str, Any] = {
    "name": "demo",
    "description": "Pretrain, SFT, rank, reward model, PPO and DPO on a ~4M-parameter Llama, then an arena",
    "stages": {
        "pretrain": {
            "kind": "pretrain",
            "from": "builtin:llama-4m",
            "tokenizer": "builtin:bpe-4k",
            "data": "builtin:stdlib-docs",
            "block_size": 128,
            "batch_size": 8,
            "max_steps": 300,
            "learning_rate": 2e-3,
            "warmup_steps": 20,
            "eval_every": 50,
            "save_every": 100,
        },
        "sft": {
            "kind": "sft",
            "from": "pretrain",
            "data": "builtin:demo-instructions",
            "eval_prompts": "builtin:demo-prompts",
            "eval_judge": "demo",
            "max_steps": 800,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "sample_every": 100,
        },
        "sample": {
            "kind": "sample",
            "from": "sft",
            "prompts": "builtin:demo-instructions",
            "max_prompts": 512,
            "responses_per_prompt": 4,
            "temperature": 1.0,
            "max_new_tokens": 24,
        },
        "rank": {
            "kind": "rank",
            "from": "sample",
            "judge": "demo",
        },
        "reward": {
            "kind": "reward",
            "from": "sft",
            "preferences": "rank",
            "max_steps": 200,
            "batch_size": 16,
            "learning_rate": 1e-4,
            "eval_every": 50,
        },
        "ppo": {
            "kind": "ppo",
            "from": "sft",
            "reward_model": "reward",
            "prompts": "builtin:demo-instructions",
            "updates": 30,
            "rollout_batch_size": 32,
            "minibatch_size": 16,
            "ppo_epochs": 2,
            "learning_rate": 1e-5,
            "max_new_tokens": 24,
            "beta": 0.2,
            "eval_prompts": "builtin:demo-prompts",
            "eval_judge": "demo",
            "sample_every": 10,
        },
        "dpo": {
            "kind": "dpo",
            "from": "sft",
            "preferences": "rank",
            "beta": 0.1,
            "sft_weight": 1.0,
            "max_steps": 150,
            "batch_size": 16,
            "learning_rate": 5e-5,
            "eval_every": 50,
            "eval_prompts": "builtin:demo-prompts",
            "eval_judge": "demo",
            "sample_every": 50,
        },
        "arena_answers": {
            "kind": "sample",
            "from": ["sft", "ppo", "dpo"],
            "prompts": "builtin:demo-prompts",
            "max_prompts": 100,
            "responses_per_prompt": 3,
            "temperature": 0.3,
            "max_new_tokens": 24,
        },
        "arena": {
            "kind": "rank",
            "from": "arena_answers",
            "pairwise": True,
            "judge": "demo",
        },
    },
}


#: what each stage is for, written beside its [stages.NAME] header
_STAGE_NOTES = {
    "pretrain": "next-token prediction on raw text",
    "sft": "supervised fine-tuning on the demo task's instructions",
    "sample": "4 answers to each of 512 training prompts, to be ranked",
    "rank": "who ranks them: the demo judge (recorded as judge:demo)",
    "reward": "a reward model learned from the rankings (all C(4,2) pairs of a prompt together)",
    "ppo": "PPO against the reward model, with a KL leash to the SFT model",
    "dpo": "DPO: the offline alternative, on the same rankings",
    "arena_answers": "SFT, PPO and DPO answer the same held-out prompts",
    "arena": "the judge compares them blind, in pairs: win rates and a leaderboard",
}

#: why a value is what it is, written beside it
_VALUE_NOTES = {
    ("pretrain", "from"): "random init from a preset config",
    ("pretrain", "tokenizer"): "byte-level BPE trained locally in about a second",
    ("pretrain", "data"): "English docstrings read from the stdlib's source",
    ("sft", "eval_prompts"): "the demo task's held-out prompts, answered while it trains",
    ("sft", "eval_judge"): "scored by the demo task's judge (a stage names its judge; none by default)",
    ("ppo", "learning_rate"): "gently: what the rankings teach is learned in a few updates; more drifts from SFT",
    ("dpo", "sft_weight"): "RPO: keep the chosen answers likely (plain DPO lowers chosen and rejected alike)",
}

DEMO_COMMENTS = Comments(
    header="rlhf-console demo: the InstructGPT recipe on a tiny Llama, offline, on a CPU.",
    beside={
        **{("stages", stage): note for stage, note in _STAGE_NOTES.items()},
        **{("stages", stage, key): note for (stage, key), note in _VALUE_NOTES.items()},
    },
)

#: the demo pipeline as `rlhf demo` runs it, with its comments
DEMO_SPEC = render_toml(DEMO_DOCUMENT, DEMO_COMMENTS)


#: `rlhf demo --quick`: the same loop with fewer steps, about half the time
QUICK: dict[str, dict[str, Any]] = {
    "pretrain": {"max_steps": 150},
    "sft": {"max_steps": 400, "sample_every": 200},
    "sample": {"max_prompts": 128},
    "reward": {"max_steps": 80},
    "ppo": {"updates": 16, "learning_rate": 2e-5},
    "dpo": {"max_steps": 60},
    "arena_answers": {"max_prompts": 40},
}


def demo_document(*, people_rank: bool = False, quick: bool = False) -> dict[str, Any]:
    """The demo pipeline as data (a copy of DEMO_DOCUMENT); with `people_rank`
    its rank stage has no judge, so it waits for people; `quick` shortens every
    stage (QUICK) and names the run demo-quick."""
    document = copy.deepcopy(DEMO_DOCUMENT)
    if people_rank:
        del document["stages"]["rank"]["judge"]
    return _with_stage_settings(document, QUICK, name="demo-quick") if quick else document


def demo_spec(*, people_rank: bool = False, quick: bool = False) -> PipelineSpec:
    """The demo pipeline; with `people_rank` its rank stage waits for people
    (the console then opens the rank screen, and `J` hands the rest to the judge);
    `quick` shortens every stage (QUICK)."""
    text = render_toml(demo_document(people_rank=people_rank, quick=quick), DEMO_COMMENTS)
    return parse_spec(text, source="builtin:demo", base_dir=Path.cwd())


def _with_stage_settings(document: dict[str, Any], settings: Mapping[str, Mapping[str, Any]], *,
                         name: str) -> dict[str, Any]:
    """`document` (changed in place) renamed, with some stage settings replaced."""
    document["name"] = name
    for stage, values in settings.items():
        document["stages"][stage].update(values)
    return document


def _with_settings(text: str, settings: Mapping[str, Mapping[str, Any]], *, name: str) -> str:
    """A spec's text with some stage settings replaced (comments are not kept);
    tests/test_e2e_demo.py shortens the demo with it."""
    return render_toml(_with_stage_settings(tomllib.loads(text), settings, name=name))
