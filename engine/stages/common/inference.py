"""Loading a model to generate with or to export: presets, folders, hub ids, LoRA adapters.

Training stages load with `builtin.models.load_model_for_training` (fp32
master weights); this is the other side: a model in the dtype it will run
in, on its device, in eval mode. A LoRA adapter folder (`adapter_config.json`)
is loaded onto its base model and merged, which makes generation as fast as
with a plain model.

Weights are read from safetensors only (`use_safetensors=True`); folders with
only pickled `.bin` weights are refused before anything is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from engine.errors import StageFailed, UserInputError
from engine.runtime.export_job import CheckpointInfo, adapter_base, inspect_checkpoint
from engine.stages.common.context import Source
from engine.stages.common.models import MAX_POSITIONS, load_model_for_training
from engine.stages.common.tokenizer import NAME as BUILTIN_TOKENIZER
from engine.stages.common.tokenizer import load_tokenizer

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def checkpoint_info(source: Source) -> CheckpointInfo | None:
    """A local folder's kind (model or adapter); None for presets and hub ids.
    Problems with the folder become StageFailed."""
    if source.kind != "path":
        return None
    try:
        return inspect_checkpoint(source.value)
    except UserInputError as exc:
        raise StageFailed(str(exc)) from None


def load_tokenizer_for(source: Source, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer a model was trained with: a preset's is the built-in one;
    an adapter's is its own if saved with it, else its base model's."""
    if source.kind == "builtin":
        return load_tokenizer(Source("builtin", BUILTIN_TOKENIZER), cache_dir)
    info = checkpoint_info(source)
    if (
        info is not None
        and info.kind == "adapter"
        and not any((info.path / name).exists() for name in _TOKENIZER_FILES)
    ):
        return load_tokenizer(base_source(info), cache_dir)
    return load_tokenizer(source, cache_dir)


def max_positions(source: Source) -> int | None:
    """How many positions the model attends over (prompt + response), read
    from its config without loading weights; None if it does not say."""
    if source.kind == "builtin":
        return MAX_POSITIONS
    info = checkpoint_info(source)
    where = base_source(info).value if info is not None and info.kind == "adapter" else source.value
    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot read the model config of {where}: {exc}") from exc
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_for_generation(
    source: Source,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dtype: torch.dtype,
    device: str,
    seed: int,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A causal LM in `dtype` on `device`, in eval mode, with the KV cache on."""
    if source.kind == "builtin":
        model = load_model_for_training(source, tokenizer, seed=seed)  # random init from the seed
    else:
        info = checkpoint_info(source)
        if info is not None and info.kind == "adapter":
            model = load_merged_adapter(info, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            model = _from_pretrained(source.value, dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device=device, dtype=dtype)
    model.config.use_cache = True
    model.eval()
    return model


def load_merged_adapter(
    info: CheckpointInfo, *, dtype: torch.dtype | str, trust_remote_code: bool = False
) -> PreTrainedModel:
    """A LoRA adapter applied to its base model and merged into its weights:
    a plain transformers model again."""
    from peft import PeftModel  # only adapters need peft

    base = _from_pretrained(base_source(info).value, dtype=dtype, trust_remote_code=trust_remote_code)
    try:
        saved = _adapter_vocab_size(info.path)
        if saved is not None and saved != base.get_input_embeddings().num_embeddings:
            # Training added tokens (the adapter then saves the resized embeddings).
            base.resize_token_embeddings(saved)
        model = PeftModel.from_pretrained(base, str(info.path))
    except Exception as exc:  # safetensors and peft raise many types; say which file
        raise StageFailed(f"cannot apply the adapter {info.path} to its base {info.base}: {exc}") from exc
    return model.merge_and_unload()


def _from_pretrained(where: str, *, dtype: torch.dtype | str, trust_remote_code: bool) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(
            where, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # a missing, partial or corrupt folder raises many types
        raise StageFailed(f"cannot load a causal language model from {where}: {exc}") from exc


def base_source(info: CheckpointInfo) -> Source:
    """An adapter's base model: a local folder, or a hub id."""
    try:
        kind, value = adapter_base(info)
    except UserInputError as exc:
        raise StageFailed(str(exc)) from None
    return Source(kind, value)


def _adapter_vocab_size(folder: Path) -> int | None:
    """The vocabulary size of embeddings saved with an adapter, if any were."""
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
        for key in weights.keys():  # noqa: SIM118  (safe_open has no __iter__)
            if key.endswith(("embed_tokens.weight", "wte.weight")):
                return int(weights.get_slice(key).get_shape()[0])
    return None


def dtype_for(precision: str) -> torch.dtype:
    """The torch dtype of a Runtime's precision (bf16, fp16 or fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
