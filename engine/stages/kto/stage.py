"""Kahneman-Tversky optimisation: a policy learns from single good/bad verdicts, with trl's KTOTrainer.

`run(ctx)`: read the verdicts (judgements in the store and/or files, as
unpaired examples: engine/stages/common/unpaired_feedback.py), load the
tokenizer and the policy, set up the reference, train, save.

KTO needs no pairs, so the judgements DPO cannot use count here: "both bad"
marks both answers undesirable, and a KTO file's single thumbs are read one
by one. Like DPO it measures the policy against a frozen reference (the
model it starts from), handled the same way: the adapters switched off under
LoRA, or log-probabilities computed up front, or a frozen copy
(engine/stages/common/preference_training.py `choose_reference`).

What it reports is what the dpo stage reports: TRL's `rewards/*` and `kl`
(train/ and eval/ on the held-out verdicts), `eval/logp_margin` on the
held-out prompts' pairs from step 0 (where their judgements make pairs), and
the eval prompts' answers.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

from pathlib import Path

from trl import KTOConfig, KTOTrainer

from engine.stages.common import quantized
from engine.stages.common.context import StageContext
from engine.stages.common.preference_data import to_dataset
from engine.stages.common.preference_training import (
    Built,
    HeldOutLogpMargin,
    check_dropped,
    choose_reference,
    eval_answers,
    load_policy,
    record_config,
    referenced_config,
    referenced_trainer,
    train_and_save,
)
from engine.stages.common.prologue import begin
from engine.stages.common.unpaired_feedback import load_unpaired, to_unpaired_dataset
from engine.stages.kto.spec import KTOSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, KTOSpec)
    quantized.require(spec, hardware)
    train_and_save(ctx, spec, build_trainer(ctx, hardware))


def build_trainer(ctx: StageContext, hardware: runtime.Runtime) -> Built:
    """Everything up to `train()`: verdicts, tokenizer, policy, reference, config,
    trainer, its eval answers and held-out margin (neither attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, KTOSpec)

    # -- verdicts --------------------------------------------------------------
    # First, so that a selection that matches nothing fails before any model loads.
    data = load_unpaired(ctx, spec)
    summary = data.summary
    ctx.log(f"verdicts: {summary['desirable']} good and {summary['undesirable']} bad answers on "
            f"{summary['prompts']} prompts ({summary['both_bad_judgements']} 'both bad' judgements): "
            f"{len(data.train)} to train on, {len(data.eval)} held out")
    if not data.eval:
        ctx.log("no held-out verdicts (eval_fraction = 0, or a single prompt): no eval/loss", level="warning")
    train = to_unpaired_dataset(data.train)
    held_out = to_unpaired_dataset(data.eval) if data.eval else None

    # -- tokenizer, policy and reference ---------------------------------------
    policy = load_policy(ctx, spec, hardware)
    reference = choose_reference(spec, policy, len(train), hardware)

    # -- trainer ---------------------------------------------------------------
    args = kto_config(spec, hardware, ctx.checkpoints_dir, evaluate=held_out is not None,
                      precompute=reference.precompute, checkpointing=policy.checkpointing,
                      resuming=ctx.resume_from is not None)
    trainer = referenced_trainer(KTOTrainer, args, policy, reference, train, held_out)
    dropped = check_dropped(ctx, trainer, len(train), spec.max_length)

    # The held-out margin on the held-out prompts' pairs, the numbers a dpo stage shows.
    margin = None
    if data.eval_pairs:
        margin = HeldOutLogpMargin.from_conversations(ctx, policy.tokenizer, to_dataset(data.eval_pairs),
                                                      max_length=spec.max_length,
                                                      batch_size=args.per_device_eval_batch_size)
    sampler = eval_answers(ctx, policy, (e.prompt for e in data.eval))
    record_config(ctx, args, trainer, policy, peft_config=reference.peft_config, reference=reference.kind,
                  data={**summary, "dropped_for_length": dropped}, sampler=sampler, hardware=hardware)
    return trainer, sampler, margin


def kto_config(spec: KTOSpec, hardware: runtime.Runtime, output_dir: Path, *, evaluate: bool, precompute: bool,
               checkpointing: bool, resuming: bool) -> KTOConfig:
    """The KTOConfig of a stage: the spec's objective, schedule and lengths, under the [trainer] table."""
    config: KTOConfig = referenced_config(KTOConfig, spec, hardware, output_dir, {
        "beta": spec.beta, "loss_type": spec.loss_type, "desirable_weight": spec.desirable_weight,
        "undesirable_weight": spec.undesirable_weight,
    }, evaluate=evaluate, precompute=precompute, checkpointing=checkpointing, resuming=resuming)
    return config
