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

import warnings
from pathlib import Path

from trl import DPOConfig, DPOTrainer

from engine.stages.common import quantized
from engine.stages.common.context import StageContext
from engine.stages.common.eval_answers import EvalAnswersCallback
from engine.stages.common.preference_training import (
    HeldOutLogpMargin,
    check_dropped,
    choose_reference,
    eval_answers,
    load_pairs,
    load_policy,
    logp_margins,
    record_config,
    referenced_config,
    referenced_trainer,
    train_and_save,
)
from engine.stages.common.prologue import begin
from engine.stages.dpo.spec import DPOSpec

# The held-out margin lives in common/ (every preference kind reports it); named here for the tests.
__all__ = ["HeldOutLogpMargin", "build_trainer", "dpo_config", "logp_margins", "run"]


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, DPOSpec)
    quantized.require(spec, hardware)
    train_and_save(ctx, spec, build_trainer(ctx, hardware))


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
    pairs = load_pairs(ctx, spec)

    # -- tokenizer, policy and reference ---------------------------------------
    policy = load_policy(ctx, spec, hardware)
    reference = choose_reference(spec, policy, len(pairs.train), hardware)

    # -- trainer ---------------------------------------------------------------
    args = dpo_config(spec, hardware, ctx.checkpoints_dir, evaluate=pairs.held_out is not None,
                      precompute=reference.precompute, checkpointing=policy.checkpointing,
                      resuming=ctx.resume_from is not None)
    trainer = referenced_trainer(DPOTrainer, args, policy, reference, pairs.train, pairs.held_out)
    # TRL drops pairs whose prompt alone fills max_length: nothing would be left to learn.
    dropped = check_dropped(ctx, trainer, len(pairs.train), spec.max_length)

    margin = None
    if trainer.eval_dataset is not None and len(trainer.eval_dataset) > 0:
        margin = HeldOutLogpMargin(ctx, trainer.eval_dataset, trainer.data_collator,
                                   batch_size=args.per_device_eval_batch_size)

    # -- answers to the eval prompts -------------------------------------------
    # With no eval_prompts named, the policy answers the prompts of the held-out pairs: the user's task.
    sampler = eval_answers(ctx, policy, (e.pair.prompt for e in pairs.data.eval))
    record_config(ctx, args, trainer, policy, peft_config=reference.peft_config, reference=reference.kind,
                  data={**pairs.data.summary, "train_pairs": len(trainer.train_dataset),
                        "eval_pairs": len(pairs.held_out_examples), "same_text_pairs": pairs.same_text,
                        "dropped_for_length": dropped},
                  sampler=sampler, hardware=hardware)
    return trainer, sampler, margin


def dpo_config(spec: DPOSpec, hardware: runtime.Runtime, output_dir: Path, *, evaluate: bool, precompute: bool,
               checkpointing: bool, resuming: bool) -> DPOConfig:
    """The DPOConfig of a stage: the spec's objective (loss_type and the settings
    its losses read), schedule and lengths, under the [trainer] table."""
    # With sft_weight, TRL adds the chosen responses' NLL to the preference loss (RPO).
    loss_type, loss_weights = spec.trl_loss()
    config: DPOConfig = referenced_config(DPOConfig, spec, hardware, output_dir, {
        "beta": spec.beta, "loss_type": loss_type, "loss_weights": loss_weights,
        "label_smoothing": spec.label_smoothing,
    }, evaluate=evaluate, precompute=precompute, checkpointing=checkpointing, resuming=resuming)
    return config
