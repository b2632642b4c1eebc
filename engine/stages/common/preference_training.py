"""What the kinds that tune a policy on judgements share at run time (dpo, kto,
orpo, cpo): reading the pairs, loading the tokenizer and the policy, the
reference with the config and trainer around it (dpo, kto), the answers to
the eval prompts, the resolved config, and `eval/logp_margin`.

    pairs = load_pairs(ctx, spec)                  # first: no model loads for an empty selection
    policy = load_policy(ctx, spec, hardware)
    ... build the kind's own trainer from pairs.train / pairs.held_out ...
    sampler = eval_answers(ctx, policy, (e.pair.prompt for e in pairs.data.eval))
    margin = HeldOutLogpMargin(ctx, trainer.eval_dataset, trainer.data_collator, ...)  # DPO-tokenized pairs
    margin = HeldOutLogpMargin.from_conversations(ctx, tokenizer, pairs.held_out, ...)  # any other trainer

Each kind keeps its objective and its trainer; what a person compares across
them is the same: the held-out log-prob margin (from step 0), TRL's
`rewards/*` metrics where the trainer logs them, the judge's score of the
eval answers, and the same rows in the report.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
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
from trl.trainer.dpo_trainer import DataCollatorForPreference

from engine.errors import StageFailed
from engine.feedback.records import Text
from engine.stages.common import quantized
from engine.stages.common import setup as runtime
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import Source, StageContext, checkpoint_name
from engine.stages.common.data_loading import held_out_prompts
from engine.stages.common.eval_answers import EvalAnswersCallback
from engine.stages.common.models import describe_trained_model
from engine.stages.common.preference_data import PreferenceData, PreferenceExample, load_preference_data, to_dataset
from engine.stages.common.preference_policy_spec import PreferencePolicySpec, ReferencedPolicySpec
from engine.stages.common.saving import parent_weights, save_trained
from engine.stages.common.tokenizer import describe_tokenizer, load_stage_tokenizer

#: what build functions give back: the trainer, its eval answers, its held-out margin (None without held-out pairs)
Built = tuple[Any, EvalAnswersCallback, "HeldOutLogpMargin | None"]


def train_and_save(ctx: StageContext, spec: PreferencePolicySpec, built: Built) -> None:
    """How each of these kinds ends: the callbacks attached, training (resumed
    from the newest checkpoint when the run is resumed), final/ saved."""
    trainer, sampler, margin = built
    # These losses are no cross-entropy: exp(eval/loss) would be a made-up perplexity.
    callback = attach_stage_callback(trainer, ctx, perplexity=False)
    sampler.stage_callback = callback
    if margin is not None:
        trainer.add_callback(margin)
    trainer.add_callback(sampler)
    # Resuming restores the policy (or its adapters), optimizer, scheduler, RNG
    # states and data position; a reference is rebuilt from `from`, as before.
    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)
    save_trained(trainer, ctx, step, base=parent_weights(ctx))


def build_reference_free(ctx: StageContext, hardware: runtime.Runtime, config_class: type[Any],
                         trainer_class: type[Any], objective: dict[str, Any]) -> Built:
    """A trainer whose loss needs no reference model (trl's ORPO and CPO, which
    share one shape): pairs, policy, config (the kind's `objective` keywords
    over the schedule), the held-out margin and the eval answers."""
    spec = ctx.spec
    assert isinstance(spec, PreferencePolicySpec)
    pairs = load_pairs(ctx, spec)
    policy = load_policy(ctx, spec, hardware)
    peft_config = runtime.lora_config(spec.lora, "CAUSAL_LM") if spec.lora is not None else None
    schedule = runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir)
    if pairs.held_out is None:
        schedule["eval_strategy"] = "no"
    args = runtime.library_config(config_class, spec,
        **schedule,
        **objective,
        max_length=spec.max_length,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=policy.checkpointing,
        prediction_loss_only=True,
        # The eval curves (and eval/logp_margin) start where the policy started.
        eval_on_start=ctx.resume_from is None and pairs.held_out is not None,
    )
    trainer = trainer_class(model=policy.model, args=args, train_dataset=pairs.train, eval_dataset=pairs.held_out,
                            processing_class=policy.tokenizer, peft_config=peft_config)
    margin = None
    if pairs.held_out is not None:
        margin = HeldOutLogpMargin.from_conversations(ctx, policy.tokenizer, pairs.held_out,
                                                      max_length=spec.max_length,
                                                      batch_size=args.per_device_eval_batch_size)
    sampler = eval_answers(ctx, policy, (e.pair.prompt for e in pairs.data.eval))
    record_config(ctx, args, trainer, policy, peft_config=peft_config, reference="none: the loss needs none",
                  data={**pairs.data.summary, "train_pairs": len(pairs.train),
                        "eval_pairs": len(pairs.held_out_examples), "same_text_pairs": pairs.same_text},
                  sampler=sampler, hardware=hardware)
    return trainer, sampler, margin


@dataclass
class Pairs:
    """The pairs a stage trains on and holds out, as prompt / chosen / rejected conversations."""

    data: PreferenceData
    train: datasets.Dataset
    held_out: datasets.Dataset | None  # None: nothing held out (eval_fraction = 0, or one prompt)
    held_out_examples: list[PreferenceExample]
    same_text: int  # pairs left out because chosen and rejected are the same text


def load_pairs(ctx: StageContext, spec: PreferencePolicySpec) -> Pairs:
    """The selected pairs, split by prompt, with the ones that teach nothing left out, logged."""
    data = load_preference_data(ctx, spec)
    # Two samples can be the same text (a confident policy at temperature 1
    # often repeats itself): such a pair has a zero gradient and only dilutes batches.
    train_examples, held_out_examples = _distinct(data.train), _distinct(data.eval)
    same = len(data.train) + len(data.eval) - len(train_examples) - len(held_out_examples)
    if same:
        ctx.log(f"{same} pairs left out: their chosen and rejected responses are the same text")
    if not train_examples:
        raise StageFailed("no training pairs with two different responses: nothing to learn from")
    if data.uses_margins:
        ctx.log(f"ties = 'margin': {spec.kind} ignores margins; each tie gives two opposite pairs that cancel out",
                level="warning")
    held_out = _pairs(held_out_examples) if held_out_examples else None
    ctx.log(
        f"pairs: {data.summary['pairs']} on {data.summary['prompts']} prompts "
        f"({annotators(data)}): {len(train_examples)} to train on, {len(held_out_examples)} held out"
    )
    if held_out is None:
        ctx.log("no held-out pairs (eval_fraction = 0, or a single prompt): no eval/loss and no "
                "eval/logp_margin", level="warning")
    return Pairs(data, _pairs(train_examples), held_out, held_out_examples, same)


def annotators(data: PreferenceData) -> str:
    """`alice: 40, judge:demo: 120`: who judged the pairs read."""
    return ", ".join(f"{name}: {count}" for name, count in data.summary["annotators"].items())


@dataclass
class Policy:
    """The policy as loaded for training, with what the resolved config says of it."""

    source: Source
    tokenizer_source: Any
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    parameters: int
    checkpointing: bool
    quantization: str  # "none", or the bits of a QLoRA base


def load_policy(ctx: StageContext, spec: PreferencePolicySpec, hardware: runtime.Runtime) -> Policy:
    """The tokenizer and the policy `from` names, QLoRA-prepared when the spec quantizes it."""
    # The policy keeps its own tokenizer: its embeddings were learned for it.
    model_source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
    tokenizer_source, tokenizer = load_stage_tokenizer(
        model_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, log=ctx.log)
    if tokenizer.eos_token is None:
        raise StageFailed("the tokenizer has no eos token to end an answer with")
    model, parameters, checkpointing = quantized.load_trainable_causal_lm(
        model_source, tokenizer, hardware, quantization=spec.quantization,
        checkpointing_setting=spec.activation_checkpointing, seed=spec.seed)
    if model_source.kind == "builtin":
        ctx.log(f"from builtin:{model_source.value}: preference-tuning a randomly initialised model",
                level="warning")
    return Policy(model_source, tokenizer_source, tokenizer, model, parameters, checkpointing, spec.quantization)


@dataclass
class Reference:
    """What a kind with a reference (dpo, kto) compares the policy with."""

    model: PreTrainedModel | None  # a frozen copy, or None: adapters off, or log-probs computed up front
    peft_config: Any  # the LoRA config when adapters are trained
    precompute: bool  # the reference's log-probs computed once, before training
    kind: str  # said in the resolved config


def choose_reference(spec: ReferencedPolicySpec, policy: Policy, train_rows: int,
                     hardware: runtime.Runtime) -> Reference:
    """The reference without waste: with LoRA the policy with its adapters off
    (no second copy); else its log-probabilities computed up front when that
    pays, else a frozen copy of the starting model."""
    precompute = precompute_reference(spec, train_rows, hardware)
    if spec.lora is not None:
        return Reference(None, runtime.lora_config(spec.lora, "CAUSAL_LM"), precompute,
                         "the policy with its LoRA adapters off")
    if precompute:
        # The trainer scores every row with the policy before its first step: the
        # starting weights, kept as numbers rather than as a model.
        return Reference(None, None, True, "log-probabilities of the starting model, computed before training")
    # Left to itself TRL would reload the reference from the config's name,
    # which a preset does not have; a frozen copy of what was loaded is exact.
    return Reference(copy.deepcopy(policy.model).eval().requires_grad_(False), None, False,
                     "a frozen copy of the starting model")


def referenced_config(config_class: type[Any], spec: ReferencedPolicySpec, hardware: runtime.Runtime,
                      output_dir: Path, objective: dict[str, Any], *, evaluate: bool, precompute: bool,
                      checkpointing: bool, resuming: bool) -> Any:
    """The config of a kind with a reference (trl's DPO and KTO, which share
    one shape): the kind's `objective` keywords over the schedule, lengths
    and reference handling, under the [trainer] table."""
    schedule = runtime.training_kwargs(spec, hardware, output_dir)
    if not evaluate:
        schedule["eval_strategy"] = "no"
    return runtime.library_config(config_class, spec,
        **schedule,
        **objective,
        max_length=spec.max_length,
        precompute_ref_log_probs=precompute,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=checkpointing,
        pad_to_multiple_of=8 if hardware.device == "cuda" else None,
        prediction_loss_only=True,
        # The eval curves (and eval/logp_margin) start where the policy started.
        eval_on_start=not resuming and evaluate,
    )


def referenced_trainer(trainer_class: type[Any], args: Any, policy: Policy, reference: Reference,
                       train: datasets.Dataset, held_out: datasets.Dataset | None) -> Any:
    """trl's trainer of a kind with a reference (DPO, KTO): the policy, and the
    reference as `choose_reference` settled it (a frozen copy, or none with
    the LoRA config that switches the adapters off)."""
    return trainer_class(
        model=policy.model,
        ref_model=reference.model,
        args=args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=policy.tokenizer,  # saved into every checkpoint, so each one loads on its own
        peft_config=reference.peft_config,
    )


def precompute_reference(spec: ReferencedPolicySpec, train_rows: int, hardware: runtime.Runtime) -> bool:
    """Whether to score every row under the reference once, before training.

    A pass over all rows up front replaces one reference forward per row per
    step: worth it once training sees every row at least once. TRL caches
    the scores of in-memory data under a file name each process draws at
    random, so the other processes would never find rank 0's: one process only."""
    if spec.precompute_ref_log_probs == "off":
        return False
    if hardware.world_size > 1:
        if spec.precompute_ref_log_probs == "on":
            raise StageFailed("precompute_ref_log_probs = 'on' works with one process only; "
                              "set it to 'auto' or 'off', or processes = 1")
        return False
    if spec.precompute_ref_log_probs == "on":
        return True
    rows_seen = spec.max_steps * spec.batch_size * spec.gradient_accumulation_steps
    return rows_seen >= train_rows


def check_dropped(ctx: StageContext, trainer: Any, train_rows: int, max_length: int) -> int:
    """How many training rows the trainer dropped because their prompt alone fills max_length
    (logged); fails when none is left."""
    dropped = train_rows - len(trainer.train_dataset)
    if dropped:
        ctx.log(f"{dropped} training rows dropped: their prompt alone fills max_length = {max_length}",
                level="warning")
    if len(trainer.train_dataset) == 0:
        raise StageFailed(f"every training row's prompt fills max_length = {max_length}: raise it")
    return dropped


def eval_answers(ctx: StageContext, policy: Policy, held_out: Iterable[Text]) -> EvalAnswersCallback:
    """The answers to the eval prompts; with no eval_prompts named, the held-out prompts: the user's task."""
    held_out_asked = held_out_prompts(({"prompt": prompt} for prompt in held_out), source="preferences")
    return EvalAnswersCallback.for_stage(ctx, policy.tokenizer, start_checkpoint=checkpoint_name(policy.source),
                                         held_out=held_out_asked)


def record_config(ctx: StageContext, args: Any, trainer: Any, policy: Policy, *, peft_config: Any,
                  reference: str, data: dict[str, Any], sampler: EvalAnswersCallback,
                  hardware: runtime.Runtime) -> None:
    """The stage's resolved config: the library config, the model, its reference, the tokenizer, the data."""
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    ctx.set_resolved_config(
        {
            **args.to_dict(),
            "world_size": args.world_size,
            "model": {
                **describe_trained_model(policy.model, policy.source, parameters=policy.parameters,
                                         trainable=trainable, lora=peft_config, quantization=policy.quantization),
                "config": policy.model.config.to_dict(),
            },
            "reference": reference,
            "tokenizer": describe_tokenizer(policy.tokenizer, policy.tokenizer_source),
            "data": data,
            "eval_prompts": sampler.describe(),
        },
        device=hardware.describe(),
    )


def _distinct(examples: list[PreferenceExample]) -> list[PreferenceExample]:
    return [e for e in examples if e.pair.chosen != e.pair.rejected]


def _pairs(examples: list[PreferenceExample]) -> datasets.Dataset:
    """Prompt / chosen / rejected conversations; these losses take no margin."""
    pairs = to_dataset(examples)
    return pairs.remove_columns("margin") if "margin" in pairs.column_names else pairs


# -- the held-out log-prob margin -------------------------------------------------------


def tokenize_pairs(tokenizer: PreTrainedTokenizerBase, pairs: datasets.Dataset) -> datasets.Dataset:
    """prompt_ids / chosen_ids / rejected_ids of conversational pairs, framed by the
    chat template as generation frames them, for trainers (ORPO, CPO, KTO) whose
    own tokenized columns are not these. The response starts where the
    templated prompt and prompt + response stop agreeing."""

    def tokenize(row: dict[str, Any]) -> dict[str, list[int]]:
        prompt = _ids(tokenizer, row["prompt"], generation_prompt=True)
        chosen = _ids(tokenizer, row["prompt"] + row["chosen"])
        rejected = _ids(tokenizer, row["prompt"] + row["rejected"])
        start = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
        return {"prompt_ids": prompt[:start], "chosen_ids": chosen[start:], "rejected_ids": rejected[start:]}

    return pairs.map(tokenize, remove_columns=pairs.column_names)


def _ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], *,
         generation_prompt: bool = False) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                            return_dict=True)
    return list(encoded["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


class HeldOutLogpMargin(TrainerCallback):
    """After every evaluation (step 0 included): `eval/logp_margin`, the mean
    over held-out pairs of log p(chosen | prompt) - log p(rejected | prompt)
    under the policy, summed over the response's tokens.

    TRL's eval/rewards/margins is beta times this gap *relative to the
    reference*, which starts at 0 by definition; this one starts where the
    policy starts, so a person sees how far the held-out gap actually moved,
    and compares kinds that have no reference (ORPO, CPO) with those that do.
    Measured exactly over every pair (not a mean of batch means)."""

    def __init__(self, ctx: StageContext, pairs: datasets.Dataset, collator: Any, *, batch_size: int) -> None:
        self.ctx = ctx
        self.pairs = pairs.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
        self.collator = collator
        self.batch_size = batch_size

    @classmethod
    def from_conversations(cls, ctx: StageContext, tokenizer: PreTrainedTokenizerBase, pairs: datasets.Dataset,
                           *, max_length: int, batch_size: int) -> HeldOutLogpMargin:
        """For a trainer that does not tokenize pairs as DPO does: tokenized here, collated as DPO collates."""
        collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length)
        return cls(ctx, tokenize_pairs(tokenizer, pairs), collator, batch_size=batch_size)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: PreTrainedModel | None = None, **kwargs: Any) -> None:
        if model is None or not state.is_world_process_zero:
            return
        margins = logp_margins(model, self.batches())
        self.ctx.log_metrics(state.global_step, {"eval/logp_margin": sum(margins) / len(margins)})

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.pairs), self.batch_size):
            rows = self.pairs.select(range(start, min(start + self.batch_size, len(self.pairs))))
            yield self.collator(list(rows))


@torch.no_grad()
def logp_margins(model: PreTrainedModel, batches: Iterator[dict[str, torch.Tensor]]) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair, from batches as TRL's
    preference collator builds them: the chosen sequences, then the rejected
    ones, with `completion_mask` marking the response tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    margins: list[float] = []
    try:
        for batch in batches:
            input_ids = batch["input_ids"].to(device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                           use_cache=False).logits[:, :-1].float()
            targets = input_ids[:, 1:]
            # A token's log-prob is read from the position before it.
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            response = batch["completion_mask"][:, 1:].to(device)
            chosen, rejected = (token_logps * response).sum(dim=-1).chunk(2)
            margins.extend((chosen - rejected).tolist())
    finally:
        model.train(was_training)
    return margins
