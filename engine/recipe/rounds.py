"""Another round of RLHF (iterated RLHF): sample from the newest policy, rank, learn again.

InstructGPT and its successors collect comparisons on the current policy's
answers, retrain the reward model on everything collected so far, and
optimise the policy again. `next_round_spec(store, run)` writes that round as
a pipeline of its own, starting from a finished run (the demo, or any run
with a policy stage):

    sample (newest policy) -> rank (people, or a judge) -> reward (every round's rankings)
    -> ppo (from the newest policy, against the new reward model)
    -> arena (the newest policy before and after this round, blind, in pairs)

A run whose newest policy is an sft stage trained on a rejection stage's
choices goes on by rejection sampling instead (Llama 2's rounds):

    sample (newest policy) -> [score] -> rejection (the same judge or reward model)
    -> sft (from the newest policy, on the answers kept) -> arena

A round continues the source run's own task: each stage takes its settings
(prompts, judge, lengths, learning rates, batch sizes, LoRA, devices) from the
run's stage of the same kind, as stored in the run's resolved spec, and only
what makes it a round is replaced (the models it starts from, the rankings it
learns from, the seeds). Nothing falls back on the demo's task: the demo's
round names the demo's prompts and judge because the demo's spec does. Where
the run has nothing to copy a required setting from, the round is refused,
saying what is missing.

Each round is a run named `NAME-round-N`, so its numbers stay with it
(`rlhf report`), and the next round starts from it in turn.
Torch-free: only the store and the spec, as data written by engine.spec.toml_render.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import EllipsisType
from typing import Any

from engine.errors import UserInputError
from engine.spec.pipeline import PipelineSpec, parse_spec
from engine.spec.toml_render import render_toml
from engine.stages import registry
from store import StageRead, StageStatus, Store

#: the stages whose output is a policy, newest kind first
POLICY_KINDS = ("ppo", "rloo", "grpo", "dpo", "kto", "orpo", "cpo", "sft")
#: stages that name the prompts a policy is trained on, in the order a round looks for them
PROMPT_KINDS = ("sample", "ppo", "rloo", "grpo")
#: the answer-scoring settings a PPO stage takes from a policy stage when the run had no PPO of its own
EVAL_KEYS = ("eval_prompts", "eval_prompt_count", "eval_judge")

Table = dict[str, Any]


def newest_policy(stages: list[StageRead]) -> StageRead | None:
    """The policy the next round starts from: the last succeeded stage of the
    most downstream kind (PPO before DPO before SFT)."""
    for kind in POLICY_KINDS:
        done = [s for s in stages if s.kind == kind and s.status == StageStatus.SUCCEEDED and s.output_path]
        if done:
            return done[-1]
    return None


def next_round_spec(store: Store, run_id: int, *, judge: str | EllipsisType | None = ...,
                    prompts: int | None = None, ppo_updates: int | None = None) -> PipelineSpec:
    """The next round of run `run_id`, validated.

    `judge`: who ranks the new answers; left out (`...`), the run's own rank
    stage's judge (none there: people rank); None: people rank; a name
    (`demo`, `module:function`): that judge. `prompts` and `ppo_updates`
    replace the run's own `max_prompts` and `updates` only where given.
    Raises UserInputError where the run cannot go another round."""
    run = store.get_run(run_id)
    stages = store.list_stages(run_id=run_id)
    policy = newest_policy(stages)
    if policy is None:
        raise UserInputError(f"run '{run.name}' has no finished policy stage (sft, dpo, ppo, rloo or grpo)")
    assert policy.output_path is not None  # newest_policy only picks stages with an output
    source = _SourceStages(run.name, run.spec.get("stages") or {}, stages)
    chosen_by = source.rejection_for(policy.name)
    if chosen_by is not None:
        return _rejection_round(run.name, run.id, source, policy, chosen_by, judge=judge, prompts=prompts)

    reward = next((s for s in reversed(stages) if s.kind == "reward" and s.output_path), None)
    sft = next((s for s in reversed(stages) if s.kind == "sft" and s.output_path), None)
    # Every ranked batch of this run and of the rounds before it (which its reward stage named),
    # but never the arena's: its pairs compare models, not answers to learn from.
    earlier = [str(b) for s in source.tables.values() if s.get("kind") == "reward" for b in s.get("batches") or ()]
    ranked = [str(b.id) for b in store.feedback.rank_batches() if b.run_id == run_id and b.items and b.done]
    arena_stage_ids = {s.id for s in stages if s.name.startswith("arena") or s.name in source.arena_sample_names}
    arena_batches = {str(b.id) for b in store.list_sample_batches(run_id=run_id) if b.stage_id in arena_stage_ids}
    batches = sorted({*earlier, *ranked} - arena_batches, key=int)

    found = re.fullmatch(r"(.*)-round-(\d+)", run.name)
    base, number = (found.group(1), int(found.group(2)) + 1) if found else (run.name, 2)

    sample_from = source.prompt_table()
    round_judge = source.rank_judge() if isinstance(judge, EllipsisType) else judge
    # The arena keeps the run's arena judge unless a judge was named for this round:
    # people ranking the new answers still want the before/after comparison judged as before.
    arena_judge = judge if isinstance(judge, str) else source.arena_judge(default=round_judge)

    sample = {**source.copy(sample_from, drop=("from", "batch_name")), "kind": "sample",
              "from": policy.output_path, "seed": _next_seed(sample_from)}
    if sample_from.get("kind") != "sample":  # prompts borrowed from an RL stage: only what a sample stage has
        sample = {k: v for k, v in sample.items() if k in _fields("sample")}
    if prompts is not None:
        sample["max_prompts"] = prompts

    rank = {**source.copy(source.rank_table(), drop=("from", "batch", "judge", "pairwise")),
            "kind": "rank", "from": "sample", "judge": round_judge}  # judge None: people rank
    reward_table = {**source.copy(source.last("reward"), drop=("from", "preferences", "batches", "since", "until")),
                    # a time window set for the first round would hide this round's rankings
                    "kind": "reward", "from": (reward or sft or policy).output_path, "preferences": "rank",
                    "batches": batches}
    ppo = {**source.copy(source.ppo_table(policy.kind, sample_from), drop=("from", "reward_model")),
           "kind": "ppo", "from": policy.output_path, "reward_model": "reward"}
    ppo["seed"] = _next_seed(ppo)
    if ppo_updates is not None:
        ppo["updates"] = ppo_updates

    arena_from = source.arena_table(ppo)
    arena_answers = {**source.copy(arena_from, drop=("from", "batch_name")), "kind": "sample",
                     "from": [policy.output_path, "ppo"], "responses_per_prompt": 2}  # one from each model
    if arena_from.get("kind") != "sample":
        arena_answers = {k: v for k, v in arena_answers.items() if k in _fields("sample")}
    arena = {**source.copy(source.arena_rank_table(), drop=("from", "batch", "judge")),
             "kind": "rank", "from": "arena_answers", "pairwise": True, "judge": arena_judge}

    document = {
        "name": f"{base}-round-{number}",
        "description": f"round {number} of {base}: rank the newest policy's answers, retrain the reward model, "
                       "PPO again",
        "stages": {"sample": sample, "rank": rank, "reward": reward_table, "ppo": ppo,
                   "arena_answers": arena_answers, "arena": arena},
    }
    return parse_spec(render_toml(document), source=f"round {number} of run {run.id}", base_dir=Path.cwd())


def _rejection_round(run_name: str, run_id: int, source: _SourceStages, policy: StageRead, rejection: Table, *,
                     judge: str | EllipsisType | None, prompts: int | None) -> PipelineSpec:
    """The next round of rejection-sampling fine-tuning (Llama 2's rounds): the newest
    policy answers the run's prompts K times, the same scorer keeps the best, and SFT
    from the newest policy trains on them; then the arena compares before and after."""
    assert policy.output_path is not None  # newest_policy only picks stages with an output
    found = re.fullmatch(r"(.*)-round-(\d+)", run_name)
    base, number = (found.group(1), int(found.group(2)) + 1) if found else (run_name, 2)
    sample_from = source.prompt_table()
    sample = {**source.copy(sample_from, drop=("from", "batch_name")), "kind": "sample",
              "from": policy.output_path, "seed": _next_seed(sample_from)}
    if prompts is not None:
        sample["max_prompts"] = prompts
    stages: dict[str, Table] = {"sample": sample}
    chooser = {**source.copy(rejection, drop=("samples", "batch", "batch_name", "scorer")), "kind": "rejection",
               "samples": "sample"}
    if isinstance(judge, str):
        chooser["judge"] = judge
    elif judge is None:
        raise UserInputError("a rejection-sampling round keeps the answers a judge or a reward model scores "
                             "best, not people's rankings: leave out --people, or name a judge (--judge NAME)")
    elif chooser.get("judge") is None:
        # The run's answers were chosen by a reward model through a score stage: score the new ones with it.
        score_from = _stage_name(rejection.get("samples"))
        score_table = source.tables.get(score_from or "", {})
        if score_table.get("kind") != "score":
            raise UserInputError(f"run '{run_name}': its rejection stage names neither a judge nor a score stage")
        stages["score"] = {**source.copy(score_table, drop=("samples", "batch")), "kind": "score",
                           "samples": "sample"}
        chooser["samples"] = "score"
    stages["rejection"] = chooser
    sft = {**source.copy(source.tables[policy.name], drop=("from", "data")), "kind": "sft",
           "from": policy.output_path, "data": "rejection"}
    sft["seed"] = _next_seed(sft)
    stages["sft"] = sft
    arena_from = source.arena_table(sft)
    arena_answers = {**source.copy(arena_from, drop=("from", "batch_name")), "kind": "sample",
                     "from": [policy.output_path, "sft"], "responses_per_prompt": 2}  # one from each model
    if arena_from.get("kind") != "sample":
        arena_answers = {k: v for k, v in arena_answers.items() if k in _fields("sample")}
    arena_judge = judge if isinstance(judge, str) else source.arena_judge(default=chooser.get("judge"))
    stages["arena_answers"] = arena_answers
    stages["arena"] = {**source.copy(source.arena_rank_table(), drop=("from", "batch", "judge")),
                       "kind": "rank", "from": "arena_answers", "pairwise": True, "judge": arena_judge}
    document = {
        "name": f"{base}-round-{number}",
        "description": f"round {number} of {base}: the newest policy's answers, the best kept, SFT on them",
        "stages": stages,
    }
    return parse_spec(render_toml(document), source=f"round {number} of run {run_id}", base_dir=Path.cwd())


def _fields(kind: str) -> set[str]:
    """The TOML keys a stage of `kind` takes."""
    return {f.alias or name for name, f in registry.STAGE_KINDS[kind].model_fields.items()}


def _next_seed(table: Mapping[str, Any]) -> int:
    """One more than the round before: new answers, yet the same round twice samples the same."""
    seed = table.get("seed", 0)
    return (seed if isinstance(seed, int) else 0) + 1


class _SourceStages:
    """The source run's stage tables (its resolved spec), read for the settings a round copies."""

    def __init__(self, run_name: str, tables: Mapping[str, Table], rows: list[StageRead]) -> None:
        self.run_name = run_name
        self.tables = {name: dict(table) for name, table in tables.items() if isinstance(table, Mapping)}
        self.outputs = {row.name: row.output_path for row in rows}
        # An arena is a pairwise rank stage; the sample stage it ranks is the arena's answers,
        # never the answers a reward model learns from.
        self.arena_ranks = {name: t for name, t in self.tables.items() if t.get("kind") == "rank" and t.get("pairwise")}
        self.arena_sample_names = {_stage_name(t.get("from")) for t in self.arena_ranks.values()} - {None}

    def rejection_for(self, policy_name: str) -> Table | None:
        """The rejection stage whose chosen answers the sft stage `policy_name` trained on, or None."""
        policy = self.tables.get(policy_name, {})
        chooser = self.tables.get(_stage_name(policy.get("data")) or "", {})
        return chooser if policy.get("kind") == "sft" and chooser.get("kind") == "rejection" else None

    def of_kind(self, kind: str) -> list[tuple[str, Table]]:
        return [(name, t) for name, t in self.tables.items() if t.get("kind") == kind]

    def last(self, kind: str) -> Table:
        found = self.of_kind(kind)
        return found[-1][1] if found else {"kind": kind}

    def prompt_table(self) -> Table:
        """The stage whose prompts the round samples: the run's sample stage (not its arena's),
        else an RL stage's training prompts."""
        samples = [t for name, t in self.of_kind("sample") if name not in self.arena_sample_names and t.get("prompts")]
        if samples:
            return samples[-1]
        for kind in PROMPT_KINDS[1:]:
            found = [t for _, t in self.of_kind(kind) if t.get("prompts")]
            if found:
                return found[-1]
        raise UserInputError(
            f"run '{self.run_name}' has no prompts to sample: none of its stages ({', '.join(PROMPT_KINDS)}) "
            "names `prompts`, and a round does not make any up; write the next round as a pipeline spec of your "
            "own (rlhf run SPEC) with a sample stage naming your prompts")

    def rank_table(self) -> Table:
        """The run's last rank stage for answers to learn from (not an arena's)."""
        ranks = [(name, t) for name, t in self.of_kind("rank") if name not in self.arena_ranks]
        return ranks[-1][1] if ranks else {"kind": "rank"}

    def rank_judge(self) -> str | None:
        judge = self.rank_table().get("judge")
        return judge if isinstance(judge, str) else None

    def arena_rank_table(self) -> Table:
        return list(self.arena_ranks.values())[-1] if self.arena_ranks else {"kind": "rank"}

    def arena_judge(self, *, default: str | None) -> str | None:
        if not self.arena_ranks:
            return default
        judge = self.arena_rank_table().get("judge")
        return judge if isinstance(judge, str) else None

    def ppo_table(self, policy_kind: str, sample_from: Table) -> Table:
        """The run's PPO stage; without one, a PPO stage on the sampled prompts, with the policy
        stage's answer scoring (its eval prompts and judge) and otherwise PPO's defaults, since
        another kind's learning rate or batch size says nothing about PPO's."""
        ppo = self.of_kind("ppo")
        if ppo:
            return ppo[-1][1]
        table: Table = {"kind": "ppo", "prompts": sample_from["prompts"]}
        for key in ("prompt_field", "max_new_tokens"):
            if key in sample_from:
                table[key] = sample_from[key]
        policy = self.last(policy_kind)
        table.update({key: policy[key] for key in EVAL_KEYS if key in policy})
        return table

    def arena_table(self, ppo: Table) -> Table:
        """Where the arena's prompts come from: the run's arena answers, else PPO's eval prompts
        (held out from training), else the prompts the round samples."""
        arenas = [t for name, t in self.of_kind("sample") if name in self.arena_sample_names and t.get("prompts")]
        if arenas:
            return arenas[-1]
        if ppo.get("eval_prompts"):
            table = {"kind": "sample", "prompts": ppo["eval_prompts"], "temperature": 0.3}
            if "max_new_tokens" in ppo:
                table["max_new_tokens"] = ppo["max_new_tokens"]
            return table
        return {**self.prompt_table(), "temperature": 0.3}  # a low temperature: each model's typical answer

    def copy(self, table: Mapping[str, Any], *, drop: Iterable[str]) -> Table:
        """`table` without the keys the round replaces; a reference to one of the run's stages
        (`stage:NAME`) becomes that stage's output folder, since the round has no stage of that name."""
        dropped = set(drop)
        result = {k: v for k, v in table.items() if k not in dropped}
        kind = str(table.get("kind"))
        references = registry.STAGE_KINDS[kind].reference_fields if kind in registry.STAGE_KINDS else {}
        for key in references:
            value = result.get(key)
            if isinstance(value, list):
                result[key] = [self._outside(kind, key, item) for item in value]
            elif isinstance(value, str):
                result[key] = self._outside(kind, key, value)
        return result

    def _outside(self, kind: str, key: str, value: Any) -> Any:
        name = _stage_name(value)
        if name is None:
            return value
        output = self.outputs.get(name)
        if not output:
            raise UserInputError(
                f"run '{self.run_name}': its {kind} stage's `{key}` names stage '{name}', which has no output "
                "for the next round to use; finish or resume the run first (rlhf resume)")
        return f"path:{output}"


def _stage_name(value: Any) -> str | None:
    """NAME of a canonical `stage:NAME` reference; None for anything else."""
    if isinstance(value, str) and value.startswith("stage:"):
        return value.removeprefix("stage:")
    return None
