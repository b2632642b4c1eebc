"""Reward model: a scalar score per response, learned from preference pairs with trl's RewardTrainer.

`run(ctx)` reads top to bottom: pick the device, load the tokenizer, read the
preference pairs (judgements in the store and/or files), load the model with
a one-output score head, train, save.

The model starts from `from` (usually the SFT stage): its language-model
head is replaced by a linear head giving one number, read at the last token
of prompt + response. The loss is InstructGPT's (Bradley-Terry):
-log sigmoid(r(chosen) - r(rejected)), minus a margin per pair when the tie
policy gives margins (`ties = "margin"`).

Pairs are conversations (a user turn, an assistant turn), so the chat
template frames them exactly as SFT taught the policy to read them; the score
stage (engine/stages/score/stage.py) frames the responses it scores the same way.

All pairs of a prompt go into one batch (`group_by_prompt`), as InstructGPT
trained the C(K,2) comparisons of a ranking together: each response is then
fitted once per pass instead of K-1 times across different steps, which
InstructGPT found overfits. The Trainer's train data loader is swapped for
one over whole prompts (`PromptBatches`); a batch holds about `batch_size`
pairs, and a prompt with more pairs than that is a batch of its own.

Metrics: train/loss, train/accuracy (share of pairs ordered right) and
train/margin (mean r(chosen) - r(rejected)) from TRL; at each evaluation
(step 0 included) eval/loss and, counted exactly over every held-out pair
(`HeldOutAgreement`), eval/accuracy, eval/margin, eval/reward_chosen and
eval/reward_rejected (mean scores), eval/accuracy_people (the pairs people
judged, when there are any) and eval/accuracy/ANNOTATOR for each annotator,
so people see whether the reward model agrees with them, and with whom it
does not.

The output folder `final/` is a plain sequence-classification folder
(`AutoModelForSequenceClassification.from_pretrained` loads it) with the
tokenizer and its chat template; after LoRA it holds the merged model and
`final/adapter/` the adapter alone.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader, Sampler
from transformers import (
    AutoModelForSequenceClassification,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from trl import RewardConfig, RewardTrainer

from engine.errors import StageFailed
from engine.feedback.records import is_person
from engine.stages.common import quantized
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import Source, StageContext
from engine.stages.common.models import count_parameters, describe_trained_model, preset_config
from engine.stages.common.preference_data import PreferenceData, PreferenceExample, load_preference_data, to_dataset
from engine.stages.common.prologue import begin
from engine.stages.common.saving import record_source, save_final, save_trained, stage_provenance
from engine.stages.common.tokenizer import describe_tokenizer, load_stage_tokenizer
from engine.stages.reward.spec import RewardSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, RewardSpec)
    quantized.require(spec, hardware)

    trainer, agreement = build_trainer(ctx, hardware)
    if agreement is not None:
        # Before the stage callback: it completes the eval logs that one records.
        trainer.add_callback(agreement)
    # The pair loss is no cross-entropy: exp(eval/loss) would be a made-up perplexity.
    callback = attach_stage_callback(trainer, ctx, perplexity=False)

    # -- train -----------------------------------------------------------------
    # Resuming restores weights (or adapters and head), optimizer, scheduler,
    # RNG states and the position in the data: the curves continue exactly.
    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)

    # -- save ------------------------------------------------------------------
    if spec.quantization != "none":
        save_qlora_reward_model(trainer, ctx, step)
    else:
        save_trained(trainer, ctx, step)


def build_trainer(ctx: StageContext, hardware: runtime.Runtime) -> tuple[RewardTrainer, HeldOutAgreement | None]:
    """Everything up to `train()`: tokenizer, pairs, model, config, trainer, and
    the callback that scores the held-out pairs (None without any; not attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, RewardSpec)
    # peft asks the model a question transformers renamed; the answer is the same.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    # -- pairs -----------------------------------------------------------------
    # First, so that a selection matching no judgements fails before any
    # model loads. Whole prompts are held out: held-out accuracy is measured
    # on questions the reward model never saw.
    data = load_preference_data(ctx, spec)
    # Two identical responses state no preference (a ranking of K orders
    # duplicates by chance): no gradient to learn from, no order to measure.
    train_examples, eval_examples = _distinct(data.train), _distinct(data.eval)
    identical = len(data.train) + len(data.eval) - len(train_examples) - len(eval_examples)
    if not train_examples:
        raise StageFailed("every training pair compares a response with an identical one: nothing to learn")
    train_pairs = _pairs(train_examples, data)
    held_out = _pairs(eval_examples, data) if eval_examples else None
    ctx.log(
        f"pairs: {data.summary['pairs']} on {data.summary['prompts']} prompts "
        f"({_annotators(data)}): {len(train_examples)} to train on, {len(eval_examples)} held out"
        + (" (with margins)" if data.uses_margins else "")
        + (f"; {identical} of two identical responses left out" if identical else "")
    )
    if held_out is None:
        ctx.log("no held-out pairs (eval_fraction = 0, or a single prompt): no eval metrics", level="warning")

    # -- tokenizer -------------------------------------------------------------
    # A preset starts from nothing, so it takes the built-in tokenizer; a
    # checkpoint keeps its own, since its embeddings were learned for it.
    model_source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
    tokenizer_source, tokenizer = load_stage_tokenizer(
        model_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, log=ctx.log)

    # -- model -----------------------------------------------------------------
    # QLoRA (quantized.require has made sure of CUDA and bitsandbytes): the
    # body frozen in 4 or 8 bits on this process's GPU; adapters and the score head train.
    qlora = spec.quantization != "none"
    if qlora:
        model = quantized_reward_model(model_source, tokenizer, spec.quantization, hardware, seed=spec.seed)
    else:
        model = load_reward_model(model_source, tokenizer, seed=spec.seed)
    if model_source.kind == "builtin":
        ctx.log(f"from builtin:{model_source.value}: training a reward model from a random init", level="warning")
    parameters = count_parameters(model)
    checkpointing = runtime.activation_checkpointing(spec.activation_checkpointing, hardware, parameters,
                                                     quantized=qlora)
    if qlora:
        model = quantized.prepare_for_adapters(model, checkpointing=checkpointing)
    peft_config = None
    if spec.lora is not None:
        # SEQ_CLS makes peft train (and save) the new score head in full beside the adapters.
        peft_config = runtime.lora_config(spec.lora, "SEQ_CLS")

    # -- trainer ---------------------------------------------------------------
    schedule = runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir)
    if held_out is None:
        schedule["eval_strategy"] = "no"
    args = runtime.library_config(RewardConfig, spec,
        **schedule,
        max_length=spec.max_length,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=checkpointing,
        pad_to_multiple_of=8 if hardware.device == "cuda" else None,
        # Only the loss and TRL's figures: keeping every eval batch's scores costs memory for nothing.
        prediction_loss_only=True,
        # The eval curves start where the model started (its head is random: accuracy ~0.5).
        eval_on_start=ctx.resume_from is None and held_out is not None,
    )
    trainer_class = PromptGroupedRewardTrainer if spec.group_by_prompt else RewardTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_pairs,
        eval_dataset=held_out,
        processing_class=tokenizer,  # saved into every checkpoint, so each one loads on its own
        peft_config=peft_config,
    )
    # TRL leaves out pairs with a side longer than max_length rather than cutting
    # them: a cut response would be scored on text it does not end with.
    dropped = len(train_pairs) - len(trainer.train_dataset)
    if dropped:
        ctx.log(f"{dropped} training pairs left out: longer than max_length = {spec.max_length} tokens",
                level="warning")
    if len(trainer.train_dataset) == 0:
        raise StageFailed(f"every training pair is longer than max_length = {spec.max_length} tokens: raise it")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    agreement = None
    if trainer.eval_dataset is not None and len(trainer.eval_dataset) > 0:
        agreement = HeldOutAgreement(ctx, trainer.eval_dataset, trainer.data_collator,
                                     batch_size=args.per_device_eval_batch_size)

    ctx.set_resolved_config(
        {
            **args.to_dict(),
            "world_size": args.world_size,
            "group_by_prompt": spec.group_by_prompt,
            "model": {
                **describe_trained_model(model, model_source, parameters=parameters, trainable=trainable,
                                         lora=peft_config, quantization=spec.quantization),
                "config": model.config.to_dict(),
            },
            "tokenizer": describe_tokenizer(tokenizer, tokenizer_source),
            "data": {**data.summary, "train_pairs": len(trainer.train_dataset),
                     "eval_pairs": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
                     "dropped_for_length": dropped, "identical_pairs_dropped": identical,
                     "margins": data.uses_margins},
        },
        device=hardware.describe(),
    )
    return trainer, agreement


def _pairs(examples: Sequence[PreferenceExample], data: PreferenceData) -> datasets.Dataset:
    """Prompt / chosen / rejected conversations (and margin), with each pair's
    prompt group (for whole-prompt batches) and annotator (for agreement).
    The Trainer feeds the model only the columns TRL's collator reads."""
    pairs = to_dataset(examples)
    if data.uses_margins and "margin" not in pairs.column_names:
        # Train and eval batches must carry the same columns: no margin is margin 0.
        pairs = pairs.add_column("margin", [0.0] * len(pairs))
    pairs = pairs.add_column("group", [e.pair.group for e in examples])
    return pairs.add_column("annotator", [e.annotator for e in examples])


def _distinct(examples: Sequence[PreferenceExample]) -> list[PreferenceExample]:
    return [e for e in examples if e.pair.chosen != e.pair.rejected]


def _annotators(data: PreferenceData) -> str:
    return ", ".join(f"{name}: {count}" for name, count in data.summary["annotators"].items())


def load_reward_model(source: Source, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> PreTrainedModel:
    """A sequence-classification model with one output (the reward), in fp32.

    A preset is built from its config; a folder or hub id loads its weights
    into the body, and the score head (which no causal LM has) starts from
    the seed. The pad token id goes into the config: the model reads the
    score at the last token that is not padding."""
    set_seed(seed)  # the new head's init is part of what the seed reproduces
    if source.kind == "builtin":
        config = preset_config(source.value, tokenizer)
        config.num_labels = 1
        model: PreTrainedModel = LlamaForSequenceClassification(config)
    else:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                source.value, num_labels=1, dtype=torch.float32,
                # Refuse pickled weights: unpickling a downloaded file can run code.
                use_safetensors=True,
            )
        except (OSError, ValueError) as exc:
            raise StageFailed(f"cannot load a model with a score head from {source.value}: {exc}") from exc
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            # A tokenizer with more tokens than the model: rows for the new ones.
            model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token_id is None:
        raise StageFailed("the tokenizer has no pad token: a reward model needs one to find each sequence's end")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def quantized_reward_model(source: Source, tokenizer: PreTrainedTokenizerBase, setting: str,
                           hardware: runtime.Runtime, *, seed: int) -> PreTrainedModel:
    """QLoRA's reward model: the body of `from` in 4 or 8 bits, with a new score
    head in full precision, drawn from the seed as load_reward_model's is."""
    set_seed(seed)
    model = quantized.load_scoring_body(source, setting, hardware)
    if tokenizer.pad_token_id is None:
        raise StageFailed("the tokenizer has no pad token: a reward model needs one to find each sequence's end")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def save_qlora_reward_model(trainer: RewardTrainer, ctx: StageContext, step: int) -> None:
    """final/ of a QLoRA reward model: the trained adapters and score head
    moved onto the `from` body loaded in fp32, then saved as any LoRA reward
    model (merged, and the adapter alone in adapter/). Merging into the 4- or
    8-bit weights would round the merged result."""
    spec = ctx.spec
    assert isinstance(spec, RewardSpec)
    if trainer.is_world_process_zero():
        source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
        tokenizer = trainer.processing_class
        assert isinstance(tokenizer, PreTrainedTokenizerBase)
        full = load_reward_model(source, tokenizer, seed=spec.seed)
        provenance = stage_provenance(ctx)
        save_final(quantized.adapters_on(trainer.accelerator.unwrap_model(trainer.model), full), tokenizer,
                   ctx.final_dir, provenance=provenance)
        record_source(ctx, provenance)
    ctx.checkpoint_saved(step, ctx.final_dir, is_final=True)
    ctx.flush()


# --- whole prompts per batch ----------------------------------------------------


class PromptBatches(Sampler[list[int]]):
    """Batches of whole prompts: every pair of a prompt in the same batch.

    Each epoch shuffles the prompts (seeded by seed and epoch, so a resumed
    run replays the same order) and takes them `prompts_per_batch` at a
    time. That count is fixed, chosen so that a batch holds about
    `batch_size` pairs, which keeps the number of batches per epoch the same
    every epoch, as the Trainer's step bookkeeping (and resuming) assumes."""

    def __init__(self, groups: Sequence[str], *, batch_size: int, seed: int) -> None:
        by_group: dict[str, list[int]] = {}
        for index, group in enumerate(groups):
            by_group.setdefault(group, []).append(index)
        self.groups = list(by_group.values())
        mean_pairs = len(groups) / max(1, len(self.groups))
        self.prompts_per_batch = max(1, round(batch_size / mean_pairs))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.groups), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for start in range(0, len(order), self.prompts_per_batch):
            yield [i for g in order[start:start + self.prompts_per_batch].tolist() for i in self.groups[g]]

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.prompts_per_batch)


class PromptGroupedRewardTrainer(RewardTrainer):
    """RewardTrainer whose training batches are whole prompts (PromptBatches).

    The Trainer only takes a plain sampler (a fixed number of examples per
    batch), so the train data loader is built here around a batch sampler;
    `accelerator.prepare` shards it across processes and the Trainer skips
    its first batches on resume as with any other loader."""

    def get_train_dataloader(self) -> DataLoader:
        assert isinstance(self.train_dataset, datasets.Dataset)
        batches = PromptBatches(self.train_dataset["group"], batch_size=self._train_batch_size,
                                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed)
        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        loader = DataLoader(
            dataset, batch_sampler=batches, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)


# --- agreement on the held-out pairs --------------------------------------------


class HeldOutAgreement(TrainerCallback):
    """At every evaluation (step 0 included), each held-out pair scored, and the
    figures added to the evaluation's log before it is recorded: accuracy and
    margin counted over every pair (TRL's are means of per-batch means, which
    a short last batch skews), the mean, min and max scores, the mean score of
    chosen and of rejected responses, and the share of pairs the reward model
    orders as its judges did, over the pairs people judged (accuracy_people)
    and for each annotator (accuracy/NAME).

    Attach it before the StageCallback: both read the same log dict, in order."""

    def __init__(self, ctx: StageContext, pairs: datasets.Dataset, collator: Any, *, batch_size: int) -> None:
        self.ctx = ctx
        self.pairs = pairs.select_columns(["chosen_ids", "rejected_ids"])
        self.annotators = list(pairs["annotator"])
        self.collator = collator
        self.batch_size = batch_size

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, model: PreTrainedModel | None = None, **kwargs: Any) -> None:
        if logs is None or "eval_loss" not in logs or model is None or not state.is_world_process_zero:
            return
        chosen, rejected = pair_rewards(model, self.batches())
        figures = held_out_metrics(chosen, rejected, self.annotators)
        logs.update({f"eval_{key}": value for key, value in figures.items()})
        logs.pop("eval_num_tokens", None)  # TRL repeats its count of training tokens here

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.pairs), self.batch_size):
            rows = self.pairs.select(range(start, min(start + self.batch_size, len(self.pairs))))
            yield self.collator(list(rows))


@torch.no_grad()
def pair_rewards(model: PreTrainedModel, batches: Iterator[dict[str, torch.Tensor]]) -> tuple[list[float], list[float]]:
    """The scores of each pair's chosen and rejected response, from batches as
    TRL's preference collator builds them (the chosen sequences, then the
    rejected ones)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    try:
        for batch in batches:
            scores = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                           use_cache=False).logits.squeeze(-1).float()
            better, worse = scores.chunk(2)
            chosen.extend(better.tolist())
            rejected.extend(worse.tolist())
    finally:
        model.train(was_training)
    return chosen, rejected


def held_out_metrics(chosen: Sequence[float], rejected: Sequence[float], annotators: Sequence[str]) -> dict[str, float]:
    """Accuracy overall, for people and for each annotator, the margin and the
    scores, over every pair. A pair counts as agreed when the chosen response
    scores strictly higher (identical responses, scored alike, do not)."""
    agreed = [c > r for c, r in zip(chosen, rejected)]
    scores = [*chosen, *rejected]
    metrics = {
        "accuracy": sum(agreed) / len(agreed),
        "margin": sum(c - r for c, r in zip(chosen, rejected)) / len(agreed),
        "reward_chosen": sum(chosen) / len(chosen), "reward_rejected": sum(rejected) / len(rejected),
        "mean_reward": sum(scores) / len(scores), "min_reward": min(scores), "max_reward": max(scores),
    }
    people = [a for a, who in zip(agreed, annotators) if is_person(who)]
    if people:
        metrics["accuracy_people"] = sum(people) / len(people)
    for name in sorted(set(annotators)):
        theirs = [a for a, who in zip(agreed, annotators) if who == name]
        metrics[f"accuracy/{_key(name)}"] = sum(theirs) / len(theirs)
    return metrics


def _key(annotator: str) -> str:
    """An annotator's name as one segment of a metric key (no slashes or spaces)."""
    return re.sub(r"[\s/]+", "_", annotator) or "unknown"
