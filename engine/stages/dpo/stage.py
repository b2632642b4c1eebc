"""Direct preference optimisation: a policy learns from chosen/rejected pairs, with trl's DPOTrainer.

`run(ctx)` reads top to bottom: pick the device, read the preference pairs
(judgements in the store and/or files), load the tokenizer and the policy,
set up the reference, train, save.

DPO needs no reward model: its loss raises the policy's log-probability of
the chosen response over the rejected one, each measured relative to a
frozen reference, the model the stage starts from; `beta` says how far the
policy may drift from it. The reference is handled without waste:

- with LoRA it is the policy with its adapters switched off: no second copy;
- when every weight trains, a frozen copy of the starting model, or no copy
  at all when the reference's log-probabilities are computed once before
  training (`precompute_ref_log_probs`): a pass over the pairs up front
  instead of a reference forward at every step, which pays off once
  training sees every pair at least once.

Pairs are conversations (a user turn, an assistant turn) with an explicit
prompt column, so the chat template frames them exactly as SFT taught the
policy and as generation asks it later.

While it trains, besides TRL's `rewards/*` metrics (train/ and eval/), the
held-out pairs give `eval/logp_margin`: the mean over held-out pairs of
log p(chosen) - log p(rejected) under the policy, from step 0 (the reference
itself) on, so a person sees DPO widen the gap on prompts it never trained
on. The fixed eval prompts are answered as in SFT (`eval/judge_score` on
demo-task prompts).

The output folder `final/` loads with plain transformers; after LoRA it
holds the merged model and `final/adapter/` the adapter alone.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import copy
import warnings
from collections.abc import Iterator
from typing import Any

import datasets
import torch
from transformers import (
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from trl import DPOConfig, DPOTrainer

from engine.errors import StageFailed
from engine.stages.common import quantized
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import StageContext, checkpoint_name
from engine.stages.common.data_loading import held_out_prompts
from engine.stages.common.eval_answers import EvalAnswersCallback
from engine.stages.common.models import count_parameters, load_model_for_training
from engine.stages.common.preference_data import PreferenceData, PreferenceExample, load_preference_data, to_dataset
from engine.stages.common.prologue import begin
from engine.stages.common.saving import parent_weights, save_trained
from engine.stages.common.tokenizer import describe_tokenizer, load_stage_tokenizer
from engine.stages.dpo.spec import DPOSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, DPOSpec)
    quantized.require(spec, hardware)

    trainer, sampler, margin = build_trainer(ctx, hardware)
    # DPO's loss is no cross-entropy: exp(eval/loss) would be a made-up perplexity.
    callback = attach_stage_callback(trainer, ctx, perplexity=False)
    sampler.stage_callback = callback
    if margin is not None:
        trainer.add_callback(margin)
    trainer.add_callback(sampler)

    # -- train -----------------------------------------------------------------
    # Resuming restores the policy (or its adapters), optimizer, scheduler, RNG
    # states and data position; the reference is rebuilt from `from`, as before.
    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)

    # -- save ------------------------------------------------------------------
    save_trained(trainer, ctx, step, base=parent_weights(ctx))


def build_trainer(
    ctx: StageContext, hardware: runtime.Runtime
) -> tuple[DPOTrainer, EvalAnswersCallback, HeldOutLogpMargin | None]:
    """Everything up to `train()`: pairs, tokenizer, policy, reference, config,
    trainer, and the callbacks that measure the held-out log-prob margin (None
    without held-out pairs) and answer the eval prompts (neither attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, DPOSpec)
    # peft asks the model a question transformers renamed; the answer is the same.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    # -- pairs -----------------------------------------------------------------
    # First, so that a selection that matches nothing fails before any model
    # loads. Prompt / chosen / rejected conversations; whole prompts are held
    # out, so the held-out margin is measured on questions never trained on.
    data = load_preference_data(ctx, spec)
    # Two samples can be the same text (a confident policy at temperature 1
    # often repeats itself): such a pair has a zero gradient and only dilutes batches.
    train_examples, held_out_examples = _distinct(data.train), _distinct(data.eval)
    same = len(data.train) + len(data.eval) - len(train_examples) - len(held_out_examples)
    if same:
        ctx.log(f"{same} pairs left out: their chosen and rejected responses are the same text")
    if not train_examples:
        raise StageFailed("no training pairs with two different responses: nothing to learn from")
    train_pairs = _pairs(train_examples)
    held_out = _pairs(held_out_examples) if held_out_examples else None
    if data.uses_margins:
        ctx.log("ties = 'margin': DPO ignores margins; each tie gives two opposite pairs that cancel out",
                level="warning")
    ctx.log(
        f"pairs: {data.summary['pairs']} on {data.summary['prompts']} prompts "
        f"({_annotators(data)}): {len(train_pairs)} to train on, {len(held_out_examples)} held out"
    )
    if held_out is None:
        ctx.log("no held-out pairs (eval_fraction = 0, or a single prompt): no eval/loss and no "
                "eval/logp_margin", level="warning")

    # -- tokenizer -------------------------------------------------------------
    # The policy keeps its own tokenizer: its embeddings were learned for it.
    model_source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
    tokenizer_source, tokenizer = load_stage_tokenizer(
        model_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, log=ctx.log)
    if tokenizer.eos_token is None:
        raise StageFailed("the tokenizer has no eos token to end an answer with")

    # -- policy and reference --------------------------------------------------
    # QLoRA (quantized.require has made sure of CUDA and bitsandbytes): the
    # frozen base in 4 or 8 bits on this process's GPU, adapters in full.
    qlora = spec.quantization != "none"
    if qlora:
        policy = quantized.load_causal_lm(model_source, spec.quantization, hardware)
    else:
        policy = load_model_for_training(model_source, tokenizer, seed=spec.seed)
    if model_source.kind == "builtin":
        ctx.log(f"from builtin:{model_source.value}: preference-tuning a randomly initialised model",
                level="warning")
    parameters = count_parameters(policy)
    checkpointing = runtime.activation_checkpointing(spec.activation_checkpointing, hardware, parameters,
                                                     quantized=qlora)
    if qlora:
        policy = quantized.prepare_for_adapters(policy, checkpointing=checkpointing)
    precompute = _precompute_reference(spec, len(train_pairs), hardware)
    peft_config = None
    reference: PreTrainedModel | None = None
    if spec.lora is not None:
        # The reference is the policy with its adapters off: no second copy.
        peft_config = runtime.lora_config(spec.lora, "CAUSAL_LM")
        reference_kind = "the policy with its LoRA adapters off"
    elif precompute:
        # TRL scores every pair with the policy before its first step: the
        # starting weights, kept as numbers rather than as a model.
        reference_kind = "log-probabilities of the starting model, computed before training"
    else:
        # Left to itself TRL would reload the reference from the config's name,
        # which a preset does not have; a frozen copy of what was loaded is exact.
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
        reference_kind = "a frozen copy of the starting model"

    # -- trainer ---------------------------------------------------------------
    schedule = runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir)
    if held_out is None:
        schedule["eval_strategy"] = "no"
    args = runtime.library_config(DPOConfig, spec,
        **schedule,
        beta=spec.beta,
        # With sft_weight, TRL adds the chosen responses' NLL to the preference loss (RPO).
        loss_type=[spec.loss_type, "sft"] if spec.sft_weight > 0 else [spec.loss_type],
        loss_weights=[1.0, spec.sft_weight] if spec.sft_weight > 0 else None,
        max_length=spec.max_length,
        precompute_ref_log_probs=precompute,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=checkpointing,
        pad_to_multiple_of=8 if hardware.device == "cuda" else None,
        prediction_loss_only=True,
        # The eval curves (and eval/logp_margin) start where the policy started.
        eval_on_start=ctx.resume_from is None and held_out is not None,
    )
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=train_pairs,
        eval_dataset=held_out,
        processing_class=tokenizer,  # saved into every checkpoint, so each one loads on its own
        peft_config=peft_config,
    )
    # TRL drops pairs whose prompt alone fills max_length: nothing would be left to learn.
    dropped = len(train_pairs) - len(trainer.train_dataset)
    if dropped:
        ctx.log(f"{dropped} training pairs dropped: their prompt alone fills max_length = {spec.max_length}",
                level="warning")
    if len(trainer.train_dataset) == 0:
        raise StageFailed(f"every training pair's prompt fills max_length = {spec.max_length}: raise it")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    margin = None
    if trainer.eval_dataset is not None and len(trainer.eval_dataset) > 0:
        margin = HeldOutLogpMargin(ctx, trainer.eval_dataset, trainer.data_collator,
                                   batch_size=args.per_device_eval_batch_size)

    # -- answers to the eval prompts -------------------------------------------
    # With no eval_prompts named, the policy answers the prompts of the held-out pairs: the user's task.
    held_out_asked = held_out_prompts(({"prompt": e.pair.prompt} for e in data.eval), source="preferences")
    sampler = EvalAnswersCallback.for_stage(ctx, tokenizer, start_checkpoint=checkpoint_name(model_source),
                                            held_out=held_out_asked)

    ctx.set_resolved_config(
        {
            **args.to_dict(),
            "world_size": args.world_size,
            "model": {
                "class": type(policy).__name__,
                "source": f"{model_source.kind}:{model_source.value}",
                "parameters": parameters,
                "trainable_parameters": trainable,
                "lora": peft_config.to_dict() if peft_config is not None else None,
                "quantization": spec.quantization,
                "config": policy.config.to_dict(),
            },
            "reference": reference_kind,
            "tokenizer": describe_tokenizer(tokenizer, tokenizer_source),
            "data": {**data.summary, "train_pairs": len(trainer.train_dataset),
                     "eval_pairs": len(held_out_examples), "same_text_pairs": same,
                     "dropped_for_length": dropped},
            "eval_prompts": sampler.describe(),
        },
        device=hardware.describe(),
    )
    return trainer, sampler, margin


def _precompute_reference(spec: DPOSpec, train_pairs: int, hardware: runtime.Runtime) -> bool:
    """Whether to score every pair under the reference once, before training.

    A pass over all pairs up front replaces one reference forward per pair per
    step: worth it once training sees every pair at least once. TRL caches
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
    pairs_seen = spec.max_steps * spec.batch_size * spec.gradient_accumulation_steps
    return pairs_seen >= train_pairs


def _distinct(examples: list[PreferenceExample]) -> list[PreferenceExample]:
    return [e for e in examples if e.pair.chosen != e.pair.rejected]


def _pairs(examples: list[PreferenceExample]) -> datasets.Dataset:
    """Prompt / chosen / rejected conversations; DPO's losses here take no margin."""
    pairs = to_dataset(examples)
    return pairs.remove_columns("margin") if "margin" in pairs.column_names else pairs


def _annotators(data: PreferenceData) -> str:
    return ", ".join(f"{name}: {count}" for name, count in data.summary["annotators"].items())


class HeldOutLogpMargin(TrainerCallback):
    """After every evaluation (step 0 included): `eval/logp_margin`, the mean
    over held-out pairs of log p(chosen | prompt) - log p(rejected | prompt)
    under the policy, summed over the response's tokens.

    TRL's eval/rewards/margins is beta times this gap *relative to the
    reference*, which starts at 0 by definition; this one starts where the
    policy starts, so a person sees how far the held-out gap actually moved.
    Measured exactly over every pair (not a mean of batch means)."""

    def __init__(self, ctx: StageContext, pairs: datasets.Dataset, collator: Any, *, batch_size: int) -> None:
        self.ctx = ctx
        self.pairs = pairs.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
        self.collator = collator
        self.batch_size = batch_size

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
