"""Saving a stage's final model: the one way every training stage writes `final/`.

A folder plain `from_pretrained` loads (weights as safetensors, config,
tokenizer with its chat template; no training_args.bin, which is a pickle),
written beside its place and renamed into it, so a crash mid-save never
leaves a half-written final folder. Used by pretrain, sft, reward, dpo, ppo
and the online RL stages.

Under DeepSpeed ZeRO-3 and FSDP no process holds the whole model: ZeRO-3
leaves an empty placeholder in each parameter between forward passes, FSDP
a shard. `whole_for_saving` gathers the full state dict (accelerate's
`get_state_dict`, a collective every process enters) and builds the model
whole from it on the main process, which then saves it as any other.
Without sharding (one process, DDP, ZeRO-1/2) it gathers nothing and the
model saved is the trained one itself, as before.

Beside `config.json` goes `rlhf_provenance.json` (engine/recipe/provenance.py):
the run, the stage and the model it started from (a hub model with the commit
it loaded), which the model card and `rlhf push` read; the store gets the
source as a `SourceModel` event of the stage.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from engine.errors import StageFailed
from engine.recipe.provenance import FORMAT, hub_commit, source_record, write_provenance
from engine.stages.common.context import Source, StageContext
from store import is_busy


def save_final(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path,
               *, base: str | None = None, provenance: dict[str, Any] | None = None) -> None:
    """A folder plain `from_pretrained` loads: weights (safetensors), config,
    tokenizer with its chat template, and the provenance record `provenance`
    (`stage_provenance`; every stage passes one). A LoRA model is saved twice: its
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
    if provenance is not None:
        write_provenance(tmp, provenance)
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)


def save_trained(trainer: Trainer, ctx: StageContext, step: int, *,
                 tokenizer: PreTrainedTokenizerBase | None = None, base: str | None = None) -> None:
    """How a Trainer-based stage ends: its model saved as final/ by the main
    process (`save_final`, with the trainer's tokenizer unless `tokenizer`
    is given; `base`: the parent weights a quantized LoRA merges into),
    recorded as the final checkpoint at `step`, and the metrics flushed.
    Every process calls it: under ZeRO-3 or FSDP gathering the weights
    takes them all."""
    # The Trainer keeps what accelerate prepared (the DeepSpeed engine, the FSDP
    # module) as model_wrapped; unwrapped, that is trainer.model itself.
    model = whole_for_saving(trainer.accelerator, trainer.model_wrapped)
    if trainer.is_world_process_zero():
        assert model is not None  # the main process always gets the model
        saved_tokenizer = tokenizer if tokenizer is not None else trainer.processing_class
        provenance = stage_provenance(ctx)
        save_final(model, saved_tokenizer, ctx.final_dir, base=base, provenance=provenance)
        record_source(ctx, provenance)
    ctx.checkpoint_saved(step, ctx.final_dir, is_final=True)
    ctx.flush()


def whole_for_saving(accelerator: Accelerator, prepared: torch.nn.Module) -> PreTrainedModel | None:
    """The trained model with every weight whole, for `save_final`.

    `prepared`: what `accelerator.prepare` returned (or the model itself, if
    it never went through it). Where nothing shards the weights, the
    unwrapped model itself, on every process: no gather, no copy. Under
    ZeRO-3 or FSDP every process must call this at the same point (the
    gather is collective); the main process gets a model built from the
    gathered weights, the others None."""
    if not _shards_weights(accelerator):
        return accelerator.unwrap_model(prepared)
    state = _gathered_state_dict(accelerator, prepared)
    if not accelerator.is_main_process:
        return None
    return _built_from(accelerator.unwrap_model(prepared), state)


def _shards_weights(accelerator: Accelerator) -> bool:
    """Whether a process lacks part of the weights: FSDP, or DeepSpeed's ZeRO
    stage 3 (stages 1 and 2 shard optimizer state and gradients only)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return bool(accelerator.deepspeed_config["zero_optimization"]["stage"] == 3)
    return False


def _gathered_state_dict(accelerator: Accelerator, prepared: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on the main process ({} or None on the others),
    gathered by every process: FSDP's full state dict, or ZeRO-3's
    parameters gathered one module at a time and copied to the CPU."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED and \
            not prepared.zero_gather_16bit_weights_on_model_save():  # type: ignore[operator]  # a DeepSpeed engine
        # accelerate refuses to gather unless the DeepSpeed config says to gather on save
        # (`stage3_gather_16bit_weights_on_model_save`; our `deepspeed-zero3` strategy sets it, a
        # user's config file may not). The consolidation it would call works all the same, and
        # failing here, after the whole training, would lose final/.
        return prepared._zero3_consolidated_16bit_state_dict()  # type: ignore[operator]  # noqa: SLF001
    return accelerator.get_state_dict(prepared)


def _built_from(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A model of `model`'s classes (its LoRA adapters and score head
    included) holding the gathered tensors themselves: built on the meta
    device, so that building it allocates nothing, then given each tensor
    (assign: no copy). For saving only: buffers that are not saved (rotary
    tables) are left unbuilt."""
    peft: Any = sys.modules.get("peft")  # imported only where the model is a PeftModel
    adapted = peft is not None and isinstance(model, peft.PeftModel)
    trained: Any = model  # a PreTrainedModel or a PeftModel (peft is untyped)
    base = trained.get_base_model() if adapted else trained
    with torch.device("meta"):
        built: Any = type(base)(base.config)
        if adapted:
            # The same adapter config builds the same modules: the LoRA layers and the
            # layers peft trains in full (a reward model's score head), under the same names.
            built = peft.get_peft_model(built, trained.peft_config[trained.active_adapter])
    loaded = built.load_state_dict(state, strict=False, assign=True)
    (built.get_base_model() if adapted else built).tie_weights()
    missing = sorted({name for name, tensor in built.state_dict().items() if tensor.is_meta})
    if missing:
        unexpected = sorted(loaded.unexpected_keys)
        raise StageFailed(f"cannot save final/: the gathered weights lack {', '.join(missing[:5])}"
                          + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
                          + (f"; they hold {', '.join(unexpected[:5])} instead" if unexpected else ""))
    return built


def _merge_into_full_precision(adapter: Path, base: str | None) -> PreTrainedModel:
    """QLoRA: merging into 4/8-bit weights would round the merged result, so
    the adapter is merged into the base model loaded in full precision."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if base is None:  # pragma: no cover - quantization refuses presets
        raise StageFailed("cannot merge the adapter: the base model has no folder")
    full = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    return PeftModel.from_pretrained(full, str(adapter)).merge_and_unload()


def stage_provenance(ctx: StageContext) -> dict[str, Any]:
    """The provenance record of the stage's model: this run and stage, and the
    `from` model it started from (resolved: a stage name is that stage's folder,
    whose own record is copied in)."""
    reference = getattr(ctx.spec, "from_", None)
    source = ctx.resolve(reference) if isinstance(reference, str) else None
    run = ctx.store.get_run(ctx.run_id)
    return _record(
        _source_record(source) if source is not None else None,
        run={"id": ctx.run_id, "name": run.name},
        stage={"id": ctx.stage_id, "name": ctx.stage_name, "kind": ctx.spec.kind},
    )


def record_source(ctx: StageContext, provenance: dict[str, Any]) -> None:
    """The stage's source model in the store, as a `SourceModel` event
    (beside its CheckpointSaved events). The folder's file holds it too, so a
    store locked by another process is said on stderr rather than waited out
    at the end of a finished training."""
    if not ctx.is_main_process:
        return
    try:
        ctx.store.add_event(run_id=ctx.run_id, stage_id=ctx.stage_id, kind="SourceModel",
                            data=dict(provenance.get("source") or {}))
    except Exception as exc:
        if not is_busy(exc):
            raise
        print(f"the store is locked: the source model is recorded only in {ctx.final_dir}", file=sys.stderr)


def _record(source: dict[str, Any] | None, **identity: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "written_by": "rlhf-console", **identity, "source": source}


def _source_record(source: Source) -> dict[str, Any]:
    revision = hub_commit(source.value) if source.kind == "hub" else None
    return source_record(source.kind, source.value, revision=revision)


def parent_weights(ctx: StageContext) -> str | None:
    """Where the stage's `from` model loads from: a folder or a hub id (None
    for a preset); QLoRA merges its adapter into these weights."""
    source = ctx.resolve(ctx.spec.from_)  # type: ignore[attr-defined]
    return source.value if source.kind in ("path", "hub") else None
