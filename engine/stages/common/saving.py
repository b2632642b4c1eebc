"""Saving a stage's final model: the one way every training stage writes `final/`.

A folder plain `from_pretrained` loads (weights as safetensors, config,
tokenizer with its chat template; no training_args.bin, which is a pickle),
written beside its place and renamed into it, so a crash mid-save never
leaves a half-written final folder. Used by pretrain, sft, reward, dpo, ppo
and the online RL stages.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from engine.errors import StageFailed
from engine.stages.common.context import StageContext


def save_final(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path,
               *, base: str | None = None) -> None:
    """A folder plain `from_pretrained` loads: weights (safetensors), config,
    tokenizer with its chat template. A LoRA model is saved twice: its
    adapter in `adapter/`, and merged into the base weights at the top, so
    that every later stage and plain transformers read a plain model.

    Written beside `folder` and renamed into place."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # Only a model built with peft can be a PeftModel: a stage without LoRA
    # (pretrain) does not pay for importing it.
    peft = sys.modules.get("peft")
    if peft is not None and isinstance(model, peft.PeftModel):
        model.save_pretrained(tmp / "adapter")
        tokenizer.save_pretrained(tmp / "adapter")
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = _merge_into_full_precision(tmp / "adapter", base)
        else:
            model = model.merge_and_unload()
    # The Trainer switched the KV cache off for training; generation wants it.
    model.config.use_cache = True
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)


def save_trained(trainer: Trainer, ctx: StageContext, step: int, *,
                 tokenizer: PreTrainedTokenizerBase | None = None, base: str | None = None) -> None:
    """How a Trainer-based stage ends: its model saved as final/ by the main
    process (`save_final`, with the trainer's tokenizer unless `tokenizer`
    is given; `base`: the parent weights a quantized LoRA merges into),
    recorded as the final checkpoint at `step`, and the metrics flushed."""
    if trainer.is_world_process_zero():
        saved_tokenizer = tokenizer if tokenizer is not None else trainer.processing_class
        save_final(trainer.accelerator.unwrap_model(trainer.model), saved_tokenizer, ctx.final_dir, base=base)
    ctx.checkpoint_saved(step, ctx.final_dir, is_final=True)
    ctx.flush()


def _merge_into_full_precision(adapter: Path, base: str | None) -> PreTrainedModel:
    """QLoRA: merging into 4/8-bit weights would round the merged result, so
    the adapter is merged into the base model loaded in full precision."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if base is None:  # pragma: no cover - quantization refuses presets
        raise StageFailed("cannot merge the adapter: the base model has no folder")
    full = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    return PeftModel.from_pretrained(full, str(adapter)).merge_and_unload()


def parent_weights(ctx: StageContext) -> str | None:
    """Where the stage's `from` model loads from: a folder or a hub id (None
    for a preset); QLoRA merges its adapter into these weights."""
    source = ctx.resolve(ctx.spec.from_)  # type: ignore[attr-defined]
    return source.value if source.kind in ("path", "hub") else None
