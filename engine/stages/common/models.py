"""Models: the built-in `llama-*` presets, and `load_model_for_training` for any source.

A preset is a Llama architecture sized to train on a laptop CPU, randomly
initialised from the stage's seed. Its vocabulary and special-token ids come
from the tokenizer it is paired with, so any tokenizer can be used with it.
Input and output embeddings are tied: at these sizes the embedding matrix is
a quarter to a half of all parameters, and tying halves that cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from engine.errors import StageFailed
from engine.recipe.provenance import hub_commit
from engine.stages.common.context import Source

#: Long enough for any block size or chat a tiny model is trained on.
MAX_POSITIONS = 2048


@dataclass(frozen=True)
class LlamaPreset:
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int  # fewer than heads: grouped-query attention, as in current Llamas
    intermediate_size: int  # about 8/3 of hidden (the SwiGLU ratio), rounded to 64


PRESETS: dict[str, LlamaPreset] = {
    # ~0.9 M parameters with a 4096-token vocabulary (tied).
    "llama-1m": LlamaPreset(hidden_size=128, layers=2, heads=4, kv_heads=2, intermediate_size=384),
    # 4.0 M parameters.
    "llama-4m": LlamaPreset(hidden_size=256, layers=4, heads=8, kv_heads=4, intermediate_size=704),
    # ~11 M parameters.
    "llama-10m": LlamaPreset(hidden_size=384, layers=6, heads=6, kv_heads=2, intermediate_size=1024),
}


def preset_config(name: str, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The LlamaConfig of a preset, fitted to a tokenizer."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise StageFailed(
            f"unknown built-in model {name!r} (known: {', '.join(sorted(PRESETS))})"
        ) from None
    return LlamaConfig(
        # len(), not vocab_size: it counts tokens added on top of the base vocabulary.
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def load_model_for_training(
    source: Source,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A causal LM in fp32, ready to train.

    Presets are built from their config with weights drawn from `seed`.
    Folders and hub ids load their weights; they always load in fp32 because
    mixed precision is applied by autocast during training, and master
    weights kept in bf16 would lose small updates."""
    if source.kind == "builtin":
        set_seed(seed)  # the random init is part of what the seed reproduces
        return LlamaForCausalLM(preset_config(source.value, tokenizer))
    # A hub model: the commit its default branch resolves to now, pinned for the
    # load, which is what saving.py records (transformers 5 keeps no trace of it).
    commit = hub_commit(source.value) if source.kind == "hub" else None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.value,
            revision=commit or "main",  # "main": from_pretrained's own default
            dtype=torch.float32,
            # Refuse pickled weights: unpickling a downloaded file can run code.
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot load a causal language model from {source.value}: {exc}") from exc
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # A tokenizer with more tokens than the model (one given by `tokenizer =`,
        # or with tokens added): give the new tokens rows instead of failing mid-batch.
        model.resize_token_embeddings(len(tokenizer))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters: tied weights count once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def describe_trained_model(model: torch.nn.Module, source: Source, *, parameters: int, trainable: int,
                           lora: Any, quantization: str) -> dict[str, Any]:
    """What a training stage's resolved config says of the model it trains
    (its `model` or `policy` entry, to which a kind adds its own keys): its
    class and source, its parameters (`count_parameters`, before adapters)
    and those that train, its LoRA config (peft's, or None) and quantization."""
    return {
        "class": type(model).__name__,
        "source": f"{source.kind}:{source.value}",
        "parameters": parameters,
        "trainable_parameters": trainable,
        "lora": lora.to_dict() if lora is not None else None,
        "quantization": quantization,
    }


def load_classifier(where: str, *, dtype: torch.dtype, quantization_config: Any = None,
                    device_map: dict[str, int] | None = None) -> PreTrainedModel:
    """A trained sequence-classification model with one output: a reward
    model, or a saved value network; in `dtype`, or quantized by
    `quantization_config` (a BitsAndBytesConfig, with its `device_map`).

    A causal LM loads as a classifier too, with a random score head, and an
    RL stage would chase its noise: it is refused, as is a model giving more
    than one score."""
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            where, dtype=dtype, use_safetensors=True, quantization_config=quantization_config, device_map=device_map,
        )
    except Exception as exc:  # a missing, partial or corrupt folder raises many types
        raise StageFailed(f"cannot load a reward model from {where}: {exc}") from exc
    architectures = model.config.architectures or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise StageFailed(
            f"{where} holds a {architectures[0]}, not a reward model: name a reward stage, or a folder "
            "saved with AutoModelForSequenceClassification (num_labels = 1)"
        )
    if model.config.num_labels != 1:
        raise StageFailed(f"{where} gives {model.config.num_labels} scores per sequence; a reward model gives one")
    return model


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each layer's activations in the backward pass instead of
    keeping them. Non-reentrant checkpointing: it needs no input that
    requires a gradient, so a frozen (or quantized) base with adapters works
    without hooks on its embeddings."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every dropout off, modules (nn.Dropout) and the rates
    attention layers read from their config (`attention_dropout`) alike, and
    the noise a mixture of experts adds to its router while training
    (`jitter_noise`), so that training mode changes nothing but whether
    layers are checkpointed: transformers checkpoints a layer only in
    training mode."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout", "jitter_noise"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    return model
