"""Another round of RLHF (iterated RLHF): sample from the newest policy, rank, learn again.

InstructGPT and its successors collect comparisons on the current policy's
answers, retrain the reward model on everything collected so far, and
optimise the policy again. `next_round_spec(store, run)` writes that round as
a pipeline of its own, starting from a finished run (the demo, or any run
with a policy stage):

    sample (newest policy) -> rank (people, or a judge) -> reward (every round's rankings)
    -> ppo (from the newest policy, against the new reward model)
    -> arena (the newest policy before and after this round, blind, in pairs)

Each round is a run named `NAME-round-N`, so its numbers stay with it
(`rlhf report`), and the next round starts from it in turn.
Torch-free: only the store and the spec, as data written by engine.spec.toml_render.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import UserInputError
from engine.spec.pipeline import PipelineSpec, parse_spec
from engine.spec.toml_render import render_toml
from store import StageRead, StageStatus, Store

#: the stages whose output is a policy, newest kind first
POLICY_KINDS = ("ppo", "rloo", "grpo", "dpo", "sft")


def newest_policy(stages: list[StageRead]) -> StageRead | None:
    """The policy the next round starts from: the last succeeded stage of the
    most downstream kind (PPO before DPO before SFT)."""
    for kind in POLICY_KINDS:
        done = [s for s in stages if s.kind == kind and s.status == StageStatus.SUCCEEDED and s.output_path]
        if done:
            return done[-1]
    return None


def next_round_spec(store: Store, run_id: int, *, judge: str | None = "demo", prompts: int = 96,
                    ppo_updates: int = 20) -> PipelineSpec:
    run = store.get_run(run_id)
    stages = store.list_stages(run_id=run_id)
    policy = newest_policy(stages)
    if policy is None:
        raise UserInputError(f"run '{run.name}' has no finished policy stage (sft, dpo, ppo, rloo or grpo)")
    reward = next((s for s in reversed(stages) if s.kind == "reward" and s.output_path), None)
    sft = next((s for s in reversed(stages) if s.kind == "sft" and s.output_path), None)
    # Every ranked batch of this run and of the rounds before it (which its reward stage named).
    earlier = [str(b) for s in run.spec.get("stages", {}).values() if s.get("kind") == "reward"
               for b in s.get("batches") or ()]
    ranked = [str(b.id) for b in store.feedback.rank_batches() if b.run_id == run_id and b.items and b.done]
    arena_batches = {str(b.id) for b in store.list_sample_batches(run_id=run_id)
                     if any(s.id == b.stage_id and s.name.startswith("arena") for s in stages)}
    batches = sorted({*earlier, *ranked} - arena_batches, key=int)

    found = re.fullmatch(r"(.*)-round-(\d+)", run.name)
    base, number = (found.group(1), int(found.group(2)) + 1) if found else (run.name, 2)
    document = {
        "name": f"{base}-round-{number}",
        "description": f"round {number} of {base}: rank the newest policy's answers, retrain the reward model, "
                       "PPO again",
        "stages": {
            "sample": {
                "kind": "sample", "from": policy.output_path, "prompts": "builtin:demo-instructions",
                "max_prompts": prompts, "responses_per_prompt": 4, "temperature": 1.0, "max_new_tokens": 24,
                "seed": number,
            },
            "rank": {"kind": "rank", "from": "sample", "judge": judge or None},  # no judge: people rank
            "reward": {
                "kind": "reward", "from": (reward or sft or policy).output_path, "preferences": "rank",
                "batches": batches, "max_steps": 120, "batch_size": 16, "learning_rate": 1e-4, "eval_every": 40,
            },
            "ppo": {
                "kind": "ppo", "from": policy.output_path, "reward_model": "reward",
                "prompts": "builtin:demo-instructions", "updates": ppo_updates, "rollout_batch_size": 32,
                "minibatch_size": 16, "ppo_epochs": 2, "learning_rate": 1e-5, "max_new_tokens": 24, "beta": 0.2,
                "eval_prompts": "builtin:demo-prompts", "eval_judge": "demo", "seed": number,
            },
            "arena_answers": {
                "kind": "sample", "from": [policy.output_path, "ppo"], "prompts": "builtin:demo-prompts",
                "max_prompts": 60, "responses_per_prompt": 2, "temperature": 0.3, "max_new_tokens": 24,
            },
            "arena": {"kind": "rank", "from": "arena_answers", "pairwise": True, "judge": judge or "demo"},
        },
    }
    return parse_spec(render_toml(document), source=f"round {number} of run {run.id}", base_dir=Path.cwd())
