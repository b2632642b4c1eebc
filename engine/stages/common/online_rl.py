"""What the rloo and grpo stages share: trl's online trainers, run the engine's way.

(online_dpo shares the setup before its trainer too: `prepare_online_training`
and `load_scorers`; its trainer and config are its own.)

RLOO and GRPO (engine/stages/rloo/stage.py, grpo.py) are the same loop with a
different advantage and loss; trl has a trainer for each, and everything
around the trainer is the same, so it lives here once and each of those
modules names its trainer and the settings only it has (a `Flavour`).
`run(ctx, flavour)` reads top to bottom: device, tokenizer, prompts,
policy, rewards, config, trainer, train, save. Each step:

    generate  K completions for each of prompts_per_step prompts (the KV cache)
    score     the reward model and/or the judges score each completion
    compare   each completion against the others of its prompt (the advantage)
    optimise  one clipped policy-gradient step on them, on a KL leash

The pieces, and why they look as they do:

- Prompts are conversations (one user turn): trl frames them in the chat
  template with the generation prompt, as SFT taught the policy and as
  `generation.generate` asks it. (On plain-text prompts trl would decode
  completions without their end-of-turn token and hand the reward model
  text it never saw in training.)
- The reward model is scored on the whole conversation, prompt and
  completion, in *its own* tokenizer's chat template (passed to trl as the
  reward processing class): exactly how the reward stage framed its pairs,
  end-of-turn token included, and it may use another tokenizer than the policy.
- Judges (`demo`, or `module:function(prompt, responses) -> scores`) become
  trl reward functions: each is called once per prompt with all of that
  prompt's completions, as it would rank a batch. With a reward model and
  judges, a completion's reward is the sum of their scores.
- The reference is the starting policy: with LoRA the policy with its
  adapters off (no copy); otherwise trl reloads it from the policy's folder
  or hub id (which is why a built-in preset is refused by the spec).
- Device-aware config: fp32 on the CPU, bf16 where the GPU has it; no
  activation checkpointing on the CPU (trl turns it on by default); dropout
  off (the ratio in the loss compares the policy with the one that sampled).
- Resumable through `callbacks.train_resumably`: a cancel saves a
  checkpoint at the current step and stops; a resumed run restores weights,
  optimizer, RNG states and its place in the prompt order.
- The fixed eval prompts are answered as in SFT and DPO (`EvalAnswersCallback`,
  `eval/judge_score` on demo-task prompts).

Metrics. trl's own go through `callbacks.metric_name` (`train/reward`,
`train/kl`, `train/rewards/reward_model/mean`, `train/rewards/judge:demo/mean`,
`train/completions/mean_length`, ...). The main ones are also logged under
PPO's names where they measure the same thing, so the console draws PPO,
RLOO and GRPO runs on the same charts (`COMPARABLE` below says how each is
derived). Each step's seconds are split as PPO splits an update's:
`time/generation`, `time/scoring` and `time/training`.

The output folder `final/` loads with plain transformers; after LoRA it
holds the merged model and `final/adapter/` the adapter alone.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from trl.trainer.utils import RepeatSampler

from engine.errors import StageFailed, UserInputError
from engine.feedback.judges import Judge, load_judge
from engine.stages.common import quantized
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import Source, StageContext, checkpoint_name
from engine.stages.common.eval_answers import EvalAnswersCallback
from engine.stages.common.inference import dtype_for
from engine.stages.common.models import count_parameters, describe_trained_model
from engine.stages.common.online_rl_spec import OnlineRLSpec
from engine.stages.common.practice_prompts import practice_prompts
from engine.stages.common.prologue import begin
from engine.stages.common.saving import parent_weights, save_trained
from engine.stages.common.tokenizer import CHAT_TEMPLATE, describe_tokenizer, load_stage_tokenizer, load_tokenizer

#: the reward model's name in trl's metric keys (train/rewards/reward_model/mean)
REWARD_MODEL_NAME = "reward_model"


@dataclass(frozen=True)
class Flavour:
    """What differs between the online trainers: the trainer and config
    classes, and the config settings only one of them has."""

    kind: str  # the stage kind
    trainer_class: type  # a trl trainer with StepTimer and ResumablePromptOrder mixed in
    config_class: type  # its trl config
    settings: Callable[[Any], dict[str, Any]]  # the spec -> config keywords of this flavour only
    kl_estimator: str  # how trl estimates the per-token KL it logs: k1 (log-ratio) or k3


def run(ctx: StageContext, flavour: Flavour) -> None:
    spec, hardware = begin(ctx, OnlineRLSpec, kind=flavour.kind)
    quantized.require(spec, hardware)

    trainer, sampler = build_trainer(ctx, hardware, flavour)
    # These losses are no cross-entropy: exp(loss) would be a made-up perplexity.
    callback = attach_stage_callback(trainer, ctx, perplexity=False)
    sampler.stage_callback = callback
    trainer.add_callback(ComparableMetrics(ctx, trainer, beta=spec.beta))
    if spec.samples_per_step > 0:
        trainer.add_callback(RolloutSamples(ctx, trainer, spec))
    trainer.add_callback(sampler)

    # -- train -----------------------------------------------------------------
    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)

    # -- save ------------------------------------------------------------------
    # (base: the weights a QLoRA adapter is merged into, in full precision)
    save_trained(trainer, ctx, step, base=parent_weights(ctx))


@dataclass(frozen=True)
class OnlineSetup:
    """What every online stage (rloo, grpo, online_dpo) has ready before its
    own trainer settings: the judges, the policy's tokenizer, the prompts it
    practises on and those held out, the policy (QLoRA-prepared where asked)
    and its LoRA and activation-checkpointing settings."""

    judges: list[Judge]
    policy_source: Source
    tokenizer_source: Source
    tokenizer: PreTrainedTokenizerBase
    prompts: datasets.Dataset  # conversations of one user turn, a "prompt" column
    held_out: list[dict[str, Any]]  # prompts set aside for the eval answers
    policy: PreTrainedModel
    parameters: int  # the policy's, before any adapters
    peft_config: Any  # peft's LoraConfig, or None without a lora table
    checkpointing: bool


def prepare_online_training(ctx: StageContext, spec: OnlineRLSpec, hardware: runtime.Runtime) -> OnlineSetup:
    """The judges, tokenizer, prompts and policy an online stage trains with,
    in that order (see `OnlineSetup`); the trainer and its config are each
    stage's own."""
    # peft asks the model a question transformers renamed; the answer is the same.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    # -- the judges, first: a judge that cannot be imported fails before any model loads
    judges = [load_stage_judge(name) for name in spec.judges]

    # -- tokenizer -------------------------------------------------------------
    # The policy keeps its own tokenizer: its embeddings were learned for it.
    policy_source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
    tokenizer_source, tokenizer = load_stage_tokenizer(
        policy_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, log=ctx.log)
    if tokenizer.eos_token_id is None:
        raise StageFailed("the policy's tokenizer has no eos token: a completion could never end")

    # -- prompts -----------------------------------------------------------------
    rows, held_out = practice_prompts(ctx, spec, tokenizer, policy_source)
    texts = [row["text"] for row in rows]
    needed = spec.prompts_per_step * hardware.world_size
    if len(texts) < needed:
        # trl's sampler only makes whole steps: with fewer prompts it makes none.
        raise StageFailed(f"{len(texts)} usable prompts, fewer than the {needed} one step takes "
                          "(prompts_per_step x processes): add prompts or lower prompts_per_step")
    # Conversations: trl frames them in the chat template with the generation prompt, as SFT taught the policy.
    prompts = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": t}]} for t in texts])

    # -- policy ----------------------------------------------------------------
    policy, parameters, checkpointing = quantized.load_trainable_causal_lm(
        policy_source, tokenizer, hardware, quantization=spec.quantization,
        checkpointing_setting=spec.activation_checkpointing, seed=spec.seed)
    peft_config = runtime.lora_config(spec.lora, "CAUSAL_LM") if spec.lora is not None else None
    return OnlineSetup(judges=judges, policy_source=policy_source, tokenizer_source=tokenizer_source,
                       tokenizer=tokenizer, prompts=prompts, held_out=held_out, policy=policy,
                       parameters=parameters, peft_config=peft_config, checkpointing=checkpointing)


@dataclass(frozen=True)
class Scorers:
    """What scores an online stage's completions, as trl takes them: the
    reward model (first, if any) and each judge as a reward function, with
    the tokenizer of each (None for a function)."""

    functions: list[Any]
    tokenizers: list[PreTrainedTokenizerBase | None]
    reward_source: Source | None  # the reward model's, None without one


def load_scorers(ctx: StageContext, spec: OnlineRLSpec, hardware: runtime.Runtime, judges: Sequence[Judge],
                 as_reward: Callable[[Judge], Callable[..., list[float]]]) -> Scorers:
    """The reward model (its own tokenizer, frozen_quantization) and the
    judges, each made a trl reward function by `as_reward` (how a stage's
    trainer hands a judge its completions: a group, or a pair)."""
    functions: list[Any] = []
    tokenizers: list[PreTrainedTokenizerBase | None] = []
    reward_source = None
    if spec.reward_model is not None:
        reward_source = ctx.resolve(spec.reward_model)
        model, reward_tokenizer = load_reward_model(reward_source, ctx, spec.frozen_quantization, hardware)
        functions.append(model)
        tokenizers.append(reward_tokenizer)
    for judge in judges:
        functions.append(as_reward(judge))
        tokenizers.append(None)  # trl ignores it for a function
    return Scorers(functions=functions, tokenizers=tokenizers, reward_source=reward_source)


def build_trainer(ctx: StageContext, hardware: runtime.Runtime, flavour: Flavour) -> tuple[Any, EvalAnswersCallback]:
    """Everything up to `train()`: tokenizer, prompts, policy, rewards, config,
    trainer, and the callback that answers the eval prompts (not attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, OnlineRLSpec)
    setup = prepare_online_training(ctx, spec, hardware)
    peft_config = setup.peft_config
    # trl builds a reference only for a policy without adapters (else: adapters
    # off) and with a KL leash; it loads it again from the policy's source.
    copies_reference = peft_config is None and spec.beta != 0
    reference_kwargs = frozen_reference_kwargs(spec, hardware) if copies_reference else {}
    if spec.frozen_quantization != "none" and spec.reward_model is None and not copies_reference:
        ctx.log(f"frozen_quantization = {spec.frozen_quantization!r} has nothing to quantize: no reward model, and "
                "the reference is " + ("the policy with its adapters off" if peft_config is not None
                                       else "not needed (beta = 0)"), level="warning")

    # -- rewards -----------------------------------------------------------------
    scorers = load_scorers(ctx, spec, hardware, setup.judges, judge_reward)
    reward_funcs = scorers.functions
    reward_tokenizers = scorers.tokenizers
    reward_source = scorers.reward_source

    # -- trainer ---------------------------------------------------------------
    schedule = runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir)
    schedule["eval_strategy"] = "no"  # no held-out loss: the eval prompts are answered by EvalAnswersCallback
    args = runtime.library_config(flavour.config_class, spec,
        **schedule,
        num_generations=spec.num_generations,
        max_completion_length=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=1.0,  # sample from the distribution whose probabilities the loss computes
        top_k=0,
        beta=spec.beta,
        epsilon=spec.clip_range,
        disable_dropout=True,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=setup.checkpointing,
        log_completions=False,  # it would print tables to stdout
        model_init_kwargs=reference_kwargs.get("model_init_kwargs"),
        **flavour.settings(spec),
    )
    with _quiet_about_reference_settings(flavour.trainer_class):
        trainer = flavour.trainer_class(
            model=setup.policy,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=setup.prompts,
            processing_class=setup.tokenizer,  # saved into every checkpoint, so each one loads on its own
            reward_processing_classes=reward_tokenizers,
            peft_config=peft_config,
            quantization_config=reference_kwargs.get("quantization_config"),
        )
    # Stable metric keys: trl would name the reward model after its folder.
    trainer.reward_func_names = [REWARD_MODEL_NAME if isinstance(f, torch.nn.Module) else f.__name__
                                 for f in reward_funcs]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    # -- answers to the eval prompts -------------------------------------------
    sampler = EvalAnswersCallback.for_stage(ctx, setup.tokenizer,
                                            start_checkpoint=checkpoint_name(setup.policy_source),
                                            held_out=setup.held_out, prompt_field=spec.prompt_field)

    ctx.set_resolved_config(
        {
            **args.to_dict(),
            "world_size": args.world_size,
            "completions_per_step": spec.prompts_per_step * spec.num_generations * hardware.world_size,
            "policy": {
                **describe_trained_model(setup.policy, setup.policy_source, parameters=setup.parameters,
                                         trainable=trainable, lora=peft_config, quantization=spec.quantization),
                "reference": "none (beta = 0)" if spec.beta == 0 else "the policy with its adapters off"
                if peft_config is not None else "a frozen copy, reloaded from the policy's source "
                f"({reference_kwargs['held_as']})",
            },
            "rewards": {
                "reward_model": None if reward_source is None else {
                    "source": f"{reward_source.kind}:{reward_source.value}",
                    "class": type(reward_funcs[0]).__name__,
                    "held_as": spec.frozen_quantization if spec.frozen_quantization != "none"
                    else str(reward_funcs[0].dtype).removeprefix("torch."),
                    "parameters": count_parameters(reward_funcs[0]),
                    "tokenizer": describe_tokenizer(reward_tokenizers[0], reward_source),
                    "shares_policy_tokenizer":
                        reward_tokenizers[0].get_vocab() == setup.tokenizer.get_vocab(),  # type: ignore[union-attr]
                },
                "judges": [judge.annotator for judge in setup.judges],
                "combined": "the sum of the scores",
            },
            "kl_estimator": flavour.kl_estimator,
            "tokenizer": describe_tokenizer(setup.tokenizer, setup.tokenizer_source),
            "prompts": {"source": spec.prompts, "count": len(setup.prompts)},
            "eval_prompts": sampler.describe(),
        },
        device=hardware.describe(),
    )
    return trainer, sampler


def load_reward_model(source: Source, ctx: StageContext, setting: str,
                      hardware: runtime.Runtime) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A frozen sequence classifier with one output, in the compute precision
    (bf16 on GPUs that support it) or quantized (`setting`, the spec's
    frozen_quantization), and its own tokenizer with the chat template the
    reward stage framed its pairs in."""
    model = quantized.load_frozen_classifier(source.value, setting, hardware)
    tokenizer = load_tokenizer(source, ctx.cache_dir)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE  # what the reward stage uses when its tokenizer has none
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def frozen_reference_kwargs(spec: OnlineRLSpec, hardware: runtime.Runtime) -> dict[str, Any]:
    """How trl is to load the reference it copies from the policy's source:
    `model_init_kwargs` (its dtype: the compute precision, as every frozen
    model) and `quantization_config` (frozen_quantization), which trl uses
    for the reference when the policy comes loaded; `held_as` says which,
    for the resolved config."""
    dtype = str(dtype_for(hardware.precision)).removeprefix("torch.")
    kwargs: dict[str, Any] = {"model_init_kwargs": {"dtype": dtype}, "held_as": dtype}
    if spec.frozen_quantization != "none":
        kwargs["quantization_config"] = quantized.bnb_config(spec.frozen_quantization, dtype_for(hardware.precision))
        kwargs["held_as"] = spec.frozen_quantization
    return kwargs


class _NotAboutTheReference(logging.Filter):
    """Drops trl's warning that model_init_kwargs and quantization_config are
    ignored for a policy that comes loaded: true of the policy, but trl
    still loads the reference with them, which is what they are given for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is already instantiated" not in record.getMessage()


@contextmanager
def _quiet_about_reference_settings(trainer_class: type) -> Iterator[None]:
    loggers = [logging.getLogger(klass.__module__) for klass in trainer_class.__mro__
               if klass.__module__.startswith("trl.")]
    quiet = _NotAboutTheReference()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def load_stage_judge(name: str) -> Judge:
    """A judge by its spec name; one that cannot be loaded fails the stage with its reason."""
    try:
        return load_judge(name)
    except UserInputError as exc:
        raise StageFailed(str(exc)) from exc


def judge_reward(judge: Judge) -> Callable[..., list[float]]:
    """A judge as a trl reward function. trl passes the step's prompts and
    completions as conversations, each prompt repeated once per completion;
    the judge is called once per run of equal prompts, with all of its
    completions, as it would judge a batch item."""

    def score(prompts: Sequence[list[dict[str, str]]], completions: Sequence[list[dict[str, str]]],
              **_: Any) -> list[float]:
        scores: list[float] = []
        start = 0
        while start < len(prompts):
            end = start
            while end < len(prompts) and prompts[end] == prompts[start]:
                end += 1
            prompt = prompts[start][-1]["content"]
            responses = [c[-1]["content"].strip() for c in completions[start:end]]
            given = [float(s) for s in judge.score(prompt, responses)]
            if len(given) != len(responses) or not all(s == s and abs(s) != float("inf") for s in given):
                raise StageFailed(f"judge {judge.name!r} returned {given!r} for {len(responses)} responses: "
                                  "expected one finite score per response")
            scores.extend(given)
            start = end
        return scores

    score.__name__ = judge.annotator  # trl's metric keys: train/rewards/judge:NAME/mean
    return score


# --- timing and comparable metrics ----------------------------------------------------


class StepTimer:
    """Mixed into a trl online trainer: the seconds of each optimizer step,
    split as PPO splits an update's. `generation` is sampling the
    completions; `scoring` is the rest of trl's generate-and-score (the
    policy's and reference's log-probabilities, the rewards, the
    advantages); `training` is the forward, backward and optimizer step.
    `step_seconds` holds the sums since the last `take_step_seconds()`."""

    step_seconds: dict[str, float]

    def _generate(self, prompts: list[Any]) -> Any:
        with self._timed("generation"):
            return super()._generate(prompts)  # type: ignore[misc]

    def _generate_and_score_completions(self, inputs: list[Any]) -> Any:
        with self._timed("generate_and_score"):
            return super()._generate_and_score_completions(inputs)  # type: ignore[misc]

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        with self._timed("step"):
            return super().training_step(*args, **kwargs)  # type: ignore[misc]

    def take_step_seconds(self) -> dict[str, float]:
        seconds = getattr(self, "step_seconds", {})
        self.step_seconds = {}
        generation = seconds.get("generation", 0.0)
        scoring = seconds.get("generate_and_score", 0.0) - generation
        return {"time/generation": generation, "time/scoring": scoring,
                "time/training": seconds.get("step", 0.0) - generation - scoring}

    def _timed(self, key: str) -> _Timed:
        if not hasattr(self, "step_seconds"):
            self.step_seconds = {}
        return _Timed(self.step_seconds, key, cuda=self.args.device.type == "cuda")  # type: ignore[attr-defined]


class ResumablePromptOrder:
    """Mixed into a trl online trainer: each pass over the prompts is shuffled
    by (seed, pass), not by one generator drawn on from pass to pass. The
    Trainer tells the sampler which pass it is on (set_epoch), so a run
    resumed in its second pass draws the order an uninterrupted run draws,
    where trl's sampler would start again from the first pass's order."""

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        sampler = super()._get_train_sampler(dataset)  # type: ignore[misc]
        return _PassSeededSampler(data_source=sampler.data_source, mini_repeat_count=sampler.mini_repeat_count,
                                  batch_size=sampler.batch_size, repeat_count=sampler.repeat_count,
                                  shuffle=sampler.shuffle, seed=sampler.seed)


class _PassSeededSampler(RepeatSampler):
    def set_epoch(self, epoch: int) -> None:
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed * 1_000_003 + epoch)


class _Timed:
    def __init__(self, sums: dict[str, float], key: str, *, cuda: bool) -> None:
        self.sums, self.key, self.cuda = sums, key, cuda

    def __enter__(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()  # time the GPU's work, not its queueing
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.sums[self.key] = self.sums.get(self.key, 0.0) + time.perf_counter() - self.started


#: PPO's metric <- how it is read from trl's log of one step (the means over the step's completions)
COMPARABLE = {
    "ppo/rm_score": "rewards/reward_model/mean: the reward model's mean score",
    "ppo/kl": "kl x completions/mean_length: the KL per completion, summed over its tokens "
              "(trl logs it per token; k1 for RLOO, k3 for GRPO)",
    "ppo/reward": "reward - beta x ppo/kl: what the step maximised (scores minus the KL penalty)",
    "ppo/beta": "beta (fixed)",
    "ppo/entropy": "entropy: the policy's mean per-token entropy",
    "ppo/response_length": "completions/mean_length: tokens per completion, its end-of-turn included",
    "ppo/ended_fraction": "1 - completions/clipped_ratio: the share that ended within max_new_tokens",
    "ppo/clip_fraction": "clip_ratio/region_mean: the share of clipped ratios (per completion for RLOO, "
                         "per token for GRPO)",
}


def comparable_metrics(logs: dict[str, float], beta: float) -> dict[str, float]:
    """The figures of one logged step under PPO's names (see COMPARABLE)."""
    out: dict[str, float] = {"ppo/beta": beta}
    if f"rewards/{REWARD_MODEL_NAME}/mean" in logs:
        out["ppo/rm_score"] = logs[f"rewards/{REWARD_MODEL_NAME}/mean"]
    length = logs.get("completions/mean_length")
    kl = logs.get("kl") if beta != 0 else 0.0
    if kl is not None and length is not None:
        out["ppo/kl"] = kl * length
    if logs.get("reward") is not None and "ppo/kl" in out:
        out["ppo/reward"] = logs["reward"] - beta * out["ppo/kl"]
    for name, key in (("ppo/entropy", "entropy"), ("ppo/response_length", "completions/mean_length"),
                      ("ppo/clip_fraction", "clip_ratio/region_mean")):
        if logs.get(key) is not None:
            out[name] = logs[key]
    if logs.get("completions/clipped_ratio") is not None:
        out["ppo/ended_fraction"] = 1.0 - logs["completions/clipped_ratio"]
    return out


class ComparableMetrics(TrainerCallback):
    """After each step's log: its figures under PPO's names, and its seconds
    split into generation, scoring and training (the trainer's StepTimer).
    trl's own keys still go through the StageCallback, unchanged."""

    def __init__(self, ctx: StageContext, trainer: StepTimer, *, beta: float) -> None:
        self.ctx = ctx
        self.trainer = trainer
        self.beta = beta

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "reward" not in logs:  # the end-of-training summary, not a step's log
            return
        metrics = {**comparable_metrics(logs, self.beta), **self.trainer.take_step_seconds()}
        if state.is_world_process_zero:
            self.ctx.log_metrics(state.global_step, metrics)


def stores_samples_now(state: TrainerState, logs: dict[str, float] | None, *, step_key: str,
                       sample_every: int) -> bool:
    """Whether an online stage stores the step's samples with this log: a
    step's log (it has `step_key`; trl's end-of-training summary has not),
    on the main process, every sample_every steps and at the last."""
    if not state.is_world_process_zero or step_key not in (logs or {}):
        return False
    step = state.global_step
    return not (step % sample_every and step < state.max_steps)


class RolloutSamples(TrainerCallback):
    """Every sample_every steps (and at the last), a few of the step's
    completions stored as samples with what each scorer gave them:
    `rm_score` (the reward model), `judge:NAME` (each judge), `reward`
    (their sum, before any KL penalty) and `advantage`. Beside the metrics
    they show whether the score rises by answering better or by exploiting
    the reward model. The completions were sampled by the weights before the
    step's update, so no checkpoint is recorded with them.

    trl keeps the latest generation batch (all processes) for its own
    completion tables: that is what is read here."""

    def __init__(self, ctx: StageContext, trainer: Any, spec: OnlineRLSpec) -> None:
        self.ctx = ctx
        self.trainer = trainer
        self.spec = spec

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not stores_samples_now(state, logs, step_key="reward", sample_every=self.spec.sample_every):
            return
        step = state.global_step
        kept = self.trainer._logs  # noqa: SLF001  trl's record of the latest completions
        count = min(self.spec.samples_per_step, len(kept["prompt"]))
        if not count:
            return
        prompts = [kept["prompt"][i][-1]["content"] for i in range(count)]
        prompt_ids = self.ctx.add_prompts([{"text": p, "source": self.spec.prompts} for p in prompts])
        samples = []
        for i, prompt_id in enumerate(prompt_ids):
            scores = {("rm_score" if name == REWARD_MODEL_NAME else name): round(values[i], 4)
                      for name, values in kept["rewards"].items()}
            meta = {"kind": "rollout", **scores, "reward": round(sum(scores.values()), 4),
                    "advantage": round(kept["advantages"][i], 4)}
            samples.append({"prompt_id": prompt_id, "response": kept["completion"][i][-1]["content"],
                            "meta": meta})
        self.ctx.log_samples(samples, step=step, checkpoint=None)
