"""Online DPO: the policy's own answers, judged as it trains, through trl's OnlineDPOTrainer.

Each step samples two completions for each of prompts_per_step prompts;
the reward model and/or the judges score both, the higher-scored one is
`chosen` and the other `rejected`, and the policy takes one DPO step on
those pairs against a frozen reference, the model it starts from
(Guo et al., 2024, "Direct Language Model Alignment from Online AI
Feedback"). Offline DPO learns from pairs someone else's model wrote; here
the pairs always come from the current policy, so they never go stale.

`run(ctx)` reads top to bottom: device, tokenizer, prompts, policy,
scorers, config, trainer, train, save. Shared with rloo/grpo (online_rl's
prepare_online_training and load_scorers): the judges, the tokenizer, the
prompts, the policy (QLoRA included) and the reward model (its own
tokenizer and chat template). Its own, because trl's OnlineDPOConfig takes
none of the group settings those trainers share (num_generations, epsilon):

- Judges are called once per prompt with both of its completions, as a
  judge ranks a pair (trl hands the step's completions over as
  [first of every prompt..., second of every prompt...]).
- The reference: with LoRA the policy with its adapters off; otherwise trl
  keeps a frozen copy of the loaded policy (no reload from its source).
- Metrics under DPO's names: trl's `rewards/chosen`, `rewards/rejected`,
  `rewards/margins`, `rewards/accuracies`, `logps/*` (train/...), plus its
  `objective/scores` (the mean score of the step's completions) and
  `objective/scores_margin` (chosen minus rejected). Where they mean what
  PPO's do they are also logged under PPO's names (`ppo/kl`, the KL per
  completion summed over its tokens; `ppo/rm_score` when the reward model
  is the only scorer; `ppo/ended_fraction`), so the console draws online DPO
  beside PPO, RLOO and GRPO. The fixed eval prompts are answered as in DPO
  (`eval/judge_score` on demo-task prompts).

The output folder `final/` loads with plain transformers; after LoRA it
holds the merged model and `final/adapter/` the adapter alone.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime
from engine.stages.common import trl_experimental  # noqa: F401  # quiets trl.experimental's import warning

# isort: split

import math
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

from engine.errors import StageFailed
from engine.feedback.judges import Judge
from engine.stages.common import online_rl, quantized
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import StageContext, checkpoint_name
from engine.stages.common.eval_answers import EvalAnswersCallback
from engine.stages.common.models import count_parameters, describe_trained_model
from engine.stages.common.prologue import begin
from engine.stages.common.saving import parent_weights, save_trained
from engine.stages.common.tokenizer import describe_tokenizer
from engine.stages.online_dpo.spec import OnlineDPOSpec


class StageOnlineDPOTrainer(OnlineDPOTrainer):
    """OnlineDPOTrainer keeping the latest step's scored pairs (trl keeps
    only their means), for the samples stored beside the metrics: each
    score as trl compares it, missing_eos_penalty included."""

    latest: list[dict[str, Any]]

    def _calculate_rewards_from_functions(self, prompts: list[Any], completions: list[Any],
                                          completion_ids_list: list[list[int]], **reward_kwargs: Any) -> Any:
        rewards = super()._calculate_rewards_from_functions(prompts, completions, completion_ids_list,
                                                            **reward_kwargs)
        half = len(prompts) // 2
        scores = rewards.tolist()
        penalty = self.args.missing_eos_penalty
        if penalty is not None:  # trl subtracts it after this call, from a completion that did not end
            ends: Any = self.eos_token_ids  # trl's list of ids (the tokenizer's eos and the model's)
            scores = [s if any(t in ends for t in ids) else s - penalty
                      for s, ids in zip(scores, completion_ids_list)]
        self.latest = [{"prompt": prompts[i][-1]["content"],
                        "responses": (completions[i][-1]["content"], completions[i + half][-1]["content"]),
                        "scores": (scores[i], scores[i + half])} for i in range(half)]
        return rewards


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, OnlineDPOSpec)
    quantized.require(spec, hardware)

    trainer, sampler = build_trainer(ctx, hardware)
    # DPO's loss is no cross-entropy: exp(loss) would be a made-up perplexity.
    callback = attach_stage_callback(trainer, ctx, perplexity=False)
    sampler.stage_callback = callback
    trainer.add_callback(ComparableMetrics(ctx, reward_model_only=spec.reward_model is not None and not spec.judges))
    if spec.samples_per_step > 0:
        trainer.add_callback(PairSamples(ctx, trainer, spec))
    trainer.add_callback(sampler)

    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)
    save_trained(trainer, ctx, step, base=parent_weights(ctx))


def build_trainer(ctx: StageContext, hardware: runtime.Runtime) -> tuple[StageOnlineDPOTrainer, EvalAnswersCallback]:
    """Everything up to `train()`: tokenizer, prompts, policy, scorers, config,
    trainer, and the callback that answers the eval prompts (not attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, OnlineDPOSpec)
    setup = online_rl.prepare_online_training(ctx, spec, hardware)
    peft_config = setup.peft_config

    # -- scorers -----------------------------------------------------------------
    scorers = online_rl.load_scorers(ctx, spec, hardware, setup.judges, pair_judge_reward)
    reward_source = scorers.reward_source

    # -- trainer ---------------------------------------------------------------
    schedule = runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir)
    schedule["eval_strategy"] = "no"  # no held-out loss: the eval prompts are answered by EvalAnswersCallback
    args: OnlineDPOConfig = runtime.library_config(OnlineDPOConfig, spec,
        **schedule,
        beta=spec.beta,
        loss_type=spec.loss_type,
        max_new_tokens=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=1.0,  # sample from the policy's own distribution
        top_k=0,
        missing_eos_penalty=spec.missing_eos_penalty or None,
        disable_dropout=True,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=setup.checkpointing,
    )
    trainer = StageOnlineDPOTrainer(
        model=setup.policy,
        reward_funcs=scorers.functions,
        args=args,
        train_dataset=setup.prompts,
        processing_class=setup.tokenizer,  # saved into every checkpoint, so each one loads on its own
        reward_processing_classes=scorers.tokenizers,
        peft_config=peft_config,
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    # -- answers to the eval prompts -------------------------------------------
    sampler = EvalAnswersCallback.for_stage(ctx, setup.tokenizer,
                                            start_checkpoint=checkpoint_name(setup.policy_source),
                                            held_out=setup.held_out, prompt_field=spec.prompt_field)
    ctx.set_resolved_config(
        {
            **args.to_dict(),
            "world_size": args.world_size,
            "completions_per_step": spec.prompts_per_step * 2 * hardware.world_size,
            "policy": {
                **describe_trained_model(setup.policy, setup.policy_source, parameters=setup.parameters,
                                         trainable=trainable, lora=peft_config, quantization=spec.quantization),
                "reference": "the policy with its adapters off" if peft_config is not None
                else "a frozen copy of the starting policy",
            },
            "rewards": {
                "reward_model": None if reward_source is None else {
                    "source": f"{reward_source.kind}:{reward_source.value}",
                    "class": type(scorers.functions[0]).__name__,
                    "parameters": count_parameters(scorers.functions[0]),
                    "tokenizer": describe_tokenizer(scorers.tokenizers[0], reward_source),
                },
                "judges": [judge.annotator for judge in setup.judges],
                "combined": "the sum of the scores; the higher-scored completion of each pair is chosen",
            },
            "tokenizer": describe_tokenizer(setup.tokenizer, setup.tokenizer_source),
            "prompts": {"source": spec.prompts, "count": len(setup.prompts)},
            "eval_prompts": sampler.describe(),
        },
        device=hardware.describe(),
    )
    return trainer, sampler


def pair_judge_reward(judge: Judge) -> Callable[..., list[float]]:
    """A judge as a reward function of trl's online DPO. trl passes the step's
    prompts twice over (every prompt's first completion, then every prompt's
    second), as conversations; the judge is called once per prompt with its
    two completions, as it would judge a pair."""

    def score(prompts: Sequence[list[dict[str, str]]], completions: Sequence[list[dict[str, str]]],
              **_: Any) -> list[float]:
        half = len(prompts) // 2
        scores = [0.0] * len(prompts)
        for i in range(half):
            prompt = prompts[i][-1]["content"]
            pair = [completions[i][-1]["content"].strip(), completions[i + half][-1]["content"].strip()]
            given = [float(s) for s in judge.score(prompt, pair)]
            if len(given) != 2 or not all(math.isfinite(s) for s in given):
                raise StageFailed(f"judge {judge.name!r} returned {given!r} for a pair of responses: "
                                  "expected two finite scores")
            scores[i], scores[i + half] = given
        return scores

    score.__name__ = judge.annotator
    return score


def comparable_metrics(logs: dict[str, float], *, reward_model_only: bool) -> dict[str, float]:
    """A step's figures under PPO's names, where they measure the same thing."""
    out: dict[str, float] = {}
    if "objective/kl" in logs:  # trl's: summed over each completion's tokens, as PPO's
        out["ppo/kl"] = logs["objective/kl"]
    if "beta" in logs:
        out["ppo/beta"] = logs["beta"]
    if reward_model_only and "objective/scores" in logs:
        out["ppo/rm_score"] = logs["objective/scores"]
    if "val/contain_eos_token" in logs:
        out["ppo/ended_fraction"] = logs["val/contain_eos_token"]
    return out


class ComparableMetrics(TrainerCallback):
    """After each step's log: its figures under PPO's names (trl's own keys
    still go through the StageCallback, unchanged)."""

    def __init__(self, ctx: StageContext, *, reward_model_only: bool) -> None:
        self.ctx = ctx
        self.reward_model_only = reward_model_only

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "rewards/margins" not in logs or not state.is_world_process_zero:
            return  # the end-of-training summary, not a step's log
        metrics = comparable_metrics(logs, reward_model_only=self.reward_model_only)
        if metrics:
            self.ctx.log_metrics(state.global_step, metrics)


class PairSamples(TrainerCallback):
    """Every sample_every steps (and at the last), a few of the step's pairs
    stored as samples, both completions of a prompt with their `score` and
    whether it was `chosen`: beside the metrics they show what the scorer
    prefers. Sampled by the weights before the step's update, so no
    checkpoint is recorded with them (this process's pairs only)."""

    def __init__(self, ctx: StageContext, trainer: StageOnlineDPOTrainer, spec: OnlineDPOSpec) -> None:
        self.ctx = ctx
        self.trainer = trainer
        self.spec = spec

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not online_rl.stores_samples_now(state, logs, step_key="rewards/margins",
                                            sample_every=self.spec.sample_every):
            return
        step = state.global_step
        pairs = getattr(self.trainer, "latest", [])[: max(1, self.spec.samples_per_step // 2)]
        if not pairs:
            return
        prompt_ids = self.ctx.add_prompts([{"text": p["prompt"], "source": self.spec.prompts} for p in pairs])
        samples = []
        for prompt_id, pair in zip(prompt_ids, pairs):
            first_chosen = pair["scores"][0] >= pair["scores"][1]  # trl's rule: a tie goes to the first
            for index, (response, score) in enumerate(zip(pair["responses"], pair["scores"])):
                samples.append({"prompt_id": prompt_id, "response": response,
                                "meta": {"kind": "rollout", "score": round(score, 4),
                                         "chosen": (index == 0) == first_chosen}})
        self.ctx.log_samples(samples, step=step, checkpoint=None)
