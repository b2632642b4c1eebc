"""What both sides of bench_scale.py share: the model shapes, and one job's settings.

A `Job` is one stage at one size: the folders and files it reads and every
setting that decides how much work a step is (batch, sequence length,
steps, LoRA, sampling). bench_scale.py writes the stage's TOML from it and
hands the same Job, as JSON, to scale_library.py, which does the same work
with the library alone: neither side can drift from the other.

Torch-free at import (the orchestrator imports it before it needs torch).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

#: The shapes of real model families: (architecture, config keywords). Read
#: from the families' published config.json files; the vocabulary is the real
#: one too, whatever size the locally trained tokenizer reaches, so the
#: embedding and the LM head cost what they cost in the real model.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    # No real family: a 2-layer Llama that checks in a minute that every stage of the bench runs.
    "tiny": ("llama", {
        "vocab_size": 4096, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }),
    # HuggingFaceTB/SmolLM2-135M: 134.5 M parameters (tied embeddings)
    "smollm2-135m": ("llama", {
        "vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 8192,
        "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "initializer_range": 0.041666666666666664,
        "tie_word_embeddings": True,
    }),
    # Qwen/Qwen2.5-0.5B: 494 M parameters (tied; q/k/v projections with biases)
    "qwen2.5-0.5b": ("qwen2", {
        "vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    }),
    # Qwen/Qwen2.5-1.5B: 1.54 B parameters (tied)
    "qwen2.5-1.5b": ("qwen2", {
        "vocab_size": 151936, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "intermediate_size": 8960, "max_position_embeddings": 32768,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    }),
}

#: every stage the bench knows, in the order it runs them
STAGES = ("pretrain", "sft", "sft-lora", "reward", "dpo", "ppo", "grpo")
#: stages that train LoRA adapters: SFT's second variant, and those that hold several models
LORA_STAGES = frozenset({"sft-lora", "dpo", "ppo", "grpo"})
#: our stages switch activation checkpointing on ("auto") on a GPU from this many parameters
CHECKPOINTING_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class Job:
    """One stage at one size, as both sides run it."""

    stage: str
    size: str
    model_dir: str  # a causal LM and its tokenizer (save_pretrained)
    reward_dir: str  # a sequence classifier with one output, same tokenizer (PPO, GRPO)
    data: str  # the JSONL file the stage reads (texts, instructions, pairs or prompts)
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32" or "bf16" (autocast; weights stay fp32)
    activation_checkpointing: bool
    batch_size: int  # blocks / examples / pairs per step (trainer stages)
    seq_len: int  # block_size / max_length
    steps: int  # optimizer steps (PPO: updates), the first `warmup` untimed
    warmup: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    lr_scheduler: str
    lora_r: int
    lora_alpha: int
    # Online RL: sampling, and how the samples are cut into steps.
    new_tokens: int
    rollout_batch: int  # PPO: prompts per update (one response each)
    minibatch: int  # PPO: responses per optimizer step
    ppo_epochs: int
    prompts_per_step: int  # GRPO
    generations: int  # GRPO: K completions per prompt
    beta: float
    seed: int = 0

    @property
    def lora(self) -> bool:
        return self.stage in LORA_STAGES

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


def uses_checkpointing(device: str, parameters: int) -> bool:
    """What our stages' activation_checkpointing = "auto" picks (engine/stages/common/setup.py)."""
    return device == "cuda" and parameters >= CHECKPOINTING_PARAMETERS


def model_config(size: str, *, pad: int, bos: int, eos: int, num_labels: int | None = None) -> Any:
    """The transformers config of a shape, with the tokenizer's special ids."""
    from transformers import LlamaConfig, Qwen2Config

    family, keywords = SHAPES[size]
    config_class = LlamaConfig if family == "llama" else Qwen2Config
    extra = {} if num_labels is None else {"num_labels": num_labels}
    return config_class(**keywords, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, **extra)
