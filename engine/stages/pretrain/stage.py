"""Pretraining: next-token prediction on a text corpus, from scratch or continued.

`run(ctx)` reads top to bottom: pick the device, load the tokenizer, load and
pack the corpus, build the model, train with transformers' Trainer, save.
It is plain causal-LM training, so the plain Trainer (not TRL) does it: every
batch is a stack of fixed-length blocks whose labels are its inputs.

Everything the stage reports goes through `ctx` (metrics, progress,
checkpoints, the resolved config); the StageCallback carries the Trainer's
side of that. Under `accelerate launch` each process runs this same function;
the Trainer finds the distributed environment itself, and only the main
process writes files or to the store.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from engine.errors import StageFailed
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import Source, StageContext
from engine.stages.common.data_loading import BlockDataset, collate_blocks, load_texts, pack_blocks, split_documents
from engine.stages.common.models import count_parameters, load_model_for_training
from engine.stages.common.prologue import begin
from engine.stages.common.saving import save_trained
from engine.stages.common.tokenizer import describe_tokenizer, load_stage_tokenizer
from engine.stages.pretrain.spec import PretrainSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, PretrainSpec)

    # -- tokenizer -------------------------------------------------------------
    # A preset starts from nothing, so it takes the built-in tokenizer; a
    # checkpoint keeps its own, since its embeddings were learned for it.
    model_source = ctx.resolve(spec.from_)
    tokenizer_source, tokenizer = load_stage_tokenizer(
        model_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, chat=False)

    # -- data ------------------------------------------------------------------
    # Whole documents are held out for evaluation, then each side is packed
    # into blocks. The eval set is cut to what eval_batches batches consume,
    # which bounds the cost of every evaluation.
    data_source = ctx.resolve(spec.data)
    texts = load_texts(
        data_source,
        cache_dir=ctx.cache_dir,
        text_field=spec.text_field,
        max_documents=spec.max_documents,
    )
    train_texts, eval_texts = split_documents(texts, spec.eval_fraction, spec.seed)
    train_blocks = pack_blocks(train_texts, tokenizer, spec.block_size)
    eval_blocks = pack_blocks(eval_texts, tokenizer, spec.block_size)
    eval_blocks = eval_blocks[: spec.eval_batches * spec.batch_size]
    if len(train_blocks) == 0 or len(eval_blocks) == 0:
        raise StageFailed(
            f"{data_source.value}: too little text for one block of {spec.block_size} tokens "
            f"in both splits ({len(train_blocks)} train, {len(eval_blocks)} eval blocks); "
            "lower block_size, raise eval_fraction, or add text"
        )
    ctx.log(
        f"data: {len(texts)} documents, {len(train_texts)} for training -> {len(train_blocks)} "
        f"blocks of {spec.block_size} tokens; {len(eval_blocks)} held-out blocks"
    )

    # -- model -----------------------------------------------------------------
    model = load_model_for_training(model_source, tokenizer, seed=spec.seed)
    if spec.block_size > model.config.max_position_embeddings:
        raise StageFailed(
            f"block_size {spec.block_size} is longer than the model's context "
            f"({model.config.max_position_embeddings} positions)"
        )

    # -- trainer ---------------------------------------------------------------
    args = runtime.library_config(TrainingArguments, spec,
        **runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir),
        # The Trainer would otherwise keep every eval batch's logits
        # (batch x block x vocab floats) to compute metrics we do not have.
        prediction_loss_only=True,
        # Our dataset yields exactly the model's inputs; nothing to remove.
        remove_unused_columns=False,
        # Every block is full, so each process has the same token count: the
        # per-step all-reduce that would equalise them changes nothing.
        average_tokens_across_devices=False,
        # Evaluate before the first step too (as nanoGPT does at iteration 0):
        # the eval curve then starts where the model started. A resumed run
        # already has that point.
        eval_on_start=ctx.resume_from is None,
    )
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=collate_blocks,
        train_dataset=BlockDataset(train_blocks),
        eval_dataset=BlockDataset(eval_blocks),
        processing_class=tokenizer,  # saved into every checkpoint, so each one loads on its own
    )
    tokens_per_step = spec.batch_size * spec.block_size * spec.gradient_accumulation_steps * args.world_size
    callback = attach_stage_callback(trainer, ctx, tokens_per_step=tokens_per_step)
    ctx.set_resolved_config(
        _resolved_config(args, model, tokenizer, tokenizer_source, data_source,
                         documents=(len(train_texts), len(eval_texts)),
                         blocks=(len(train_blocks), len(eval_blocks))),
        device=hardware.describe(),
    )

    # -- train -----------------------------------------------------------------
    # Resuming continues the same curve; a cancel saves a checkpoint and stops.
    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)

    # -- save ------------------------------------------------------------------
    save_trained(trainer, ctx, step, tokenizer=tokenizer)


def _resolved_config(
    args: TrainingArguments,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_source: Source,
    data_source: Source,
    *,
    documents: tuple[int, int],
    blocks: tuple[int, int],
) -> dict[str, Any]:
    """What really ran: every TrainingArguments value (library defaults
    included) at the top level, the process count, and a summary of the
    model, tokenizer and data."""
    return {
        **args.to_dict(),
        "world_size": args.world_size,
        "model": {
            "class": type(model).__name__,
            "parameters": count_parameters(model),
            "config": model.config.to_dict(),
        },
        "tokenizer": describe_tokenizer(tokenizer, tokenizer_source),
        "data": {
            "source": f"{data_source.kind}:{data_source.value}",
            "train_documents": documents[0],
            "eval_documents": documents[1],
            "train_blocks": blocks[0],
            "eval_blocks": blocks[1],
        },
    }

