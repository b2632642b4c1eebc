"""Models held in 4 or 8 bits through bitsandbytes, for every stage that offers it.

Two settings ask for it (their field types are in engine/spec/fields.py):

- `quantization` (SFT, reward, DPO, PPO, RLOO, GRPO): QLoRA. The base model
  the LoRA adapters train on is frozen, so it can be held in 4 bits (NF4,
  with its quantization constants quantized again: the QLoRA paper's
  recipe) or 8 bits (LLM.int8()); matmuls run in the compute precision.
  The stages that train a causal LM load it through `load_trainable_causal_lm`,
  which makes that choice (and the activation-checkpointing one) in one place.
- `frozen_quantization` (PPO, RLOO, GRPO): the models a stage only runs
  forward, the reward model and a reference that is a copy of the policy.
  Left at "none" they are held in the compute precision (bf16 on GPUs that
  support it): no gradient or optimizer state ever needs more.

bitsandbytes quantizes on CUDA GPUs only and is an optional package, so a
stage asking for either checks both before it loads anything (`require`)
and stops with one line naming what is missing.

Each process loads its copy onto its own GPU (`device_map`): accelerate
refuses a quantized model placed on another device than the process's, and
a quantized model cannot be moved with `.to()` afterwards.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, NamedTuple

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from engine.errors import StageFailed
from engine.stages.common.context import Source
from engine.stages.common.inference import dtype_for
from engine.stages.common.models import (
    count_parameters,
    enable_activation_checkpointing,
    load_classifier,
    load_model_for_training,
)
from engine.stages.common.setup import Runtime, activation_checkpointing

#: what each setting is for, as its refusal says it
_PURPOSE = {
    "quantization": ("(QLoRA) ", "to train LoRA adapters on the unquantized model"),
    "frozen_quantization": ("", "to hold the frozen models in the compute precision instead"),
}


def require(spec: Any, hardware: Runtime) -> None:
    """Stop the stage, with one line, if it asks for quantization (either
    setting) where this machine cannot do it: no CUDA GPU, or no bitsandbytes.
    Called first thing, before any data or model loads."""
    for field, (label, instead) in _PURPOSE.items():
        setting = getattr(spec, field, "none")
        if setting == "none":
            continue
        missing = missing_support(hardware, device_setting=spec.device)
        if missing:
            raise StageFailed(
                f"{field} = {setting!r} {label}needs a CUDA GPU and bitsandbytes, but "
                + " and ".join(missing) + f"; set {field} = 'none' {instead}"
            )


def missing_support(hardware: Runtime, *, device_setting: str) -> list[str]:
    """What this machine lacks for bitsandbytes, in words (empty: nothing)."""
    missing = []
    if hardware.device != "cuda":
        missing.append("this stage runs on the CPU" + (
            " (device = 'cpu')" if device_setting == "cpu" else " (no CUDA GPU is visible)"))
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package is not installed (pip install bitsandbytes)")
    return missing


def bnb_config(setting: str, compute: torch.dtype) -> Any:  # -> transformers.BitsAndBytesConfig
    """The BitsAndBytesConfig of a setting: "4bit" is QLoRA's NF4 with double
    quantization, computing in `compute`; "8bit" is LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if setting == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    if setting == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"not a quantization: {setting!r}")


def device_map() -> dict[str, int]:
    """This process's GPU, for from_pretrained: accelerate sets LOCAL_RANK per process."""
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def load_causal_lm(source: Source, setting: str, hardware: Runtime, *, field: str = "quantization") -> PreTrainedModel:
    """A causal LM with its linear layers in 4 or 8 bits on this process's GPU
    (`require` has made sure of CUDA and bitsandbytes), computing in the
    stage's precision. `field` names the setting that asked, for the refusal
    of a built-in preset (a random init: nothing worth quantizing)."""
    _refuse_preset(source, setting, field)
    compute = dtype_for(hardware.precision)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source.value, quantization_config=bnb_config(setting, compute), dtype=compute,
            use_safetensors=True, device_map=device_map(),
        )
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot load a causal language model from {source.value}: {exc}") from exc


class TrainableLM(NamedTuple):
    """A causal LM loaded to train, with what was settled on the way."""

    model: PreTrainedModel
    parameters: int  # count_parameters, before any adapters
    checkpointing: bool  # whether activations are recomputed in the backward pass


def load_trainable_causal_lm(source: Source, tokenizer: PreTrainedTokenizerBase, hardware: Runtime, *,
                             quantization: str, checkpointing_setting: str, seed: int) -> TrainableLM:
    """The causal LM a stage trains (sft, dpo/kto/orpo/cpo, rloo/grpo,
    online_dpo): in full, or for QLoRA (`quantization`; `require` has made
    sure of CUDA and bitsandbytes) the frozen base in 4 or 8 bits on this
    process's GPU, prepared for adapters that train in full; activation
    checkpointing as `checkpointing_setting` and the model's size say."""
    qlora = quantization != "none"
    if qlora:
        model = load_causal_lm(source, quantization, hardware)
    else:
        model = load_model_for_training(source, tokenizer, seed=seed)
    parameters = count_parameters(model)
    checkpointing = activation_checkpointing(checkpointing_setting, hardware, parameters, quantized=qlora)
    if qlora:
        model = prepare_for_adapters(model, checkpointing=checkpointing)
    return TrainableLM(model, parameters, checkpointing)


def load_frozen_classifier(where: str, setting: str, hardware: Runtime) -> PreTrainedModel:
    """A trained reward model to run forward only, frozen and in eval mode:
    in the compute precision (setting "none": bf16 on GPUs that support it,
    fp32 on the CPU), or its linear layers in 4 or 8 bits on this process's GPU."""
    compute = dtype_for(hardware.precision)
    if setting == "none":
        model = load_classifier(where, dtype=compute)
    else:
        model = load_classifier(where, dtype=compute, quantization_config=bnb_config(setting, compute),
                                device_map=device_map())
    model.requires_grad_(False).eval()
    return model


def load_scoring_body(source: Source, setting: str, hardware: Runtime) -> PreTrainedModel:
    """A model with a one-output score head to train adapters on (a reward
    model, a value network): the body from `source` with its linear layers
    in 4 or 8 bits on this process's GPU, and the folder's score head, or a
    new one (a language model's folder has none). The head stays in full
    precision: transformers leaves a model's last module unquantized."""
    _refuse_preset(source, setting, "quantization")
    where = source.value
    compute = dtype_for(hardware.precision)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=1, quantization_config=bnb_config(setting, compute), dtype=compute,
            use_safetensors=True, device_map=device_map(),
        )
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot load a model with a score head from {where}: {exc}") from exc


def prepare_for_adapters(model: PreTrainedModel, *, checkpointing: bool) -> PreTrainedModel:
    """A quantized base ready for LoRA: every weight frozen, the layers left
    in 16 bits (norms, embeddings, a score head) in fp32 for stable
    training, and activation checkpointing on if asked."""
    from peft import prepare_model_for_kbit_training

    # Checkpointing is switched on here rather than by peft, which would call
    # transformers' deprecated gradient_checkpointing_enable (and warn).
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if checkpointing:
        enable_activation_checkpointing(model)
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether a model (or the base of a peft model) holds bitsandbytes weights."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def adapters_on(model: Any, full_precision: PreTrainedModel) -> Any:  # (PeftModel, base) -> PeftModel
    """The trained adapters of a peft model (and the layers it trains in full,
    such as a score head) on another copy of its base, here one in full
    precision: merging into 4- or 8-bit weights would round the result."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    config = model.peft_config[model.active_adapter]
    copy = get_peft_model(full_precision, config)
    set_peft_model_state_dict(copy, get_peft_model_state_dict(model))
    return copy


def _refuse_preset(source: Source, setting: str, field: str) -> None:
    # The spec refuses `quantization` with a preset in `from`; this also covers a
    # reference quantized by frozen_quantization, and stages built in code.
    if source.kind == "builtin":
        raise StageFailed(
            f"{field} = {setting!r} needs pretrained weights to quantize, and builtin:{source.value} is a random "
            "init: name a stage, a folder or a hub id in `from`"
        )
