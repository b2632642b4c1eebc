"""Tiny model folders for tests that generate or export (well under a second each).

A byte-level BPE of 512 tokens trained on a few docstrings, with the
built-in tokenizer's special tokens and chat template, and a 2-layer Llama
of ~100k parameters: the same kind of folder a stage writes, small enough
to load, sample and export in a fraction of a second.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from engine.stages.common.tokenizer import train_bpe

#: prompt + response positions: small, so a test can overflow it
MAX_POSITIONS = 256


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    texts = [inspect.getdoc(obj) or "" for obj in (str, dict, list, set, int, float, bytes, open, print,
                                                   sorted, zip, map, range, Path, inspect)]
    return train_bpe([t for t in texts if t], vocab_size=512)


def tiny_model(tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def save_tiny_model(folder: Path, *, seed: int = 0, train_steps: int = 0) -> Path:
    """A model folder as a stage writes it (safetensors, config, tokenizer);
    `train_steps` steps of AdamW on a docstring first, so it is not a bare init."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=seed)
    if train_steps:
        ids = tokenizer(inspect.getdoc(str), return_tensors="pt")["input_ids"][:, :64]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(train_steps):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_lora_adapter(base: Path, folder: Path, *, seed: int = 1) -> Path:
    """A LoRA adapter of `base` with non-zero weights (a freshly initialised
    adapter is the identity, which would hide a missing merge)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    adapted = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                               task_type="CAUSAL_LM", init_lora_weights=False))
    adapted.save_pretrained(folder)
    return folder
