"""Generating responses: batched, left-padded, with the KV cache.

Shared by every stage that writes responses (SFT's eval prompts, the sample
stage, PPO rollouts, the playground), so sampling settings mean the same
thing everywhere and are recorded the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.8  # 0 means greedy
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int  # new tokens generated
    finished: bool  # ended with the end-of-turn token instead of running out of room

    def meta(self) -> dict[str, int | bool]:
        return {"tokens": self.tokens, "finished": self.finished}


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """A user turn in the tokenizer's chat template, ready for the assistant's answer;
    plain text for tokenizers without a template (continuation)."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    *,
    responses_per_prompt: int = 1,
    batch_size: int = 16,
) -> list[list[Generated]]:
    """`responses_per_prompt` responses to each prompt, in prompt order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Decoder-only models continue from the right end: pad on the left.
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(settings.seed)
    results: list[list[Generated]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = [format_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampling = settings.temperature > 0
            output = model.generate(
                **encoded,
                do_sample=sampling,
                temperature=settings.temperature if sampling else None,
                top_p=settings.top_p if sampling else None,
                max_new_tokens=settings.max_new_tokens,
                num_return_sequences=responses_per_prompt,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            for row, tokens in enumerate(new_tokens):
                if row % responses_per_prompt == 0:
                    results.append([])
                results[-1].append(_decode(tokenizer, tokens))
    finally:
        tokenizer.padding_side = padding_side
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return results


def _decode(tokenizer: PreTrainedTokenizerBase, tokens: torch.Tensor) -> Generated:
    ids = tokens.tolist()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    finished = eos in ids
    if finished:
        ids = ids[: ids.index(eos)]
    ids = [i for i in ids if i != pad]
    return Generated(text=tokenizer.decode(ids, skip_special_tokens=True).strip(), tokens=len(ids), finished=finished)
