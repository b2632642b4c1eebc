"""Generating responses: batched, left-padded, with the KV cache.

Shared by every stage that writes responses (SFT's eval prompts, the sample
stage, PPO rollouts, the playground), so sampling settings mean the same
thing everywhere and are recorded the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@dataclass(frozen=True)
class SampledTokens:
    """One batch of responses as token ids, for stages that train on them (PPO).

    Row i holds response i % k of prompt i // k (k = responses_per_prompt)."""

    prompt_ids: torch.Tensor  # (rows, P): the chat-formatted prompts, padded on the left
    prompt_mask: torch.Tensor  # (rows, P): 1 on prompt tokens, 0 on padding
    response_ids: torch.Tensor  # (rows, R): the new tokens; after an eos, padding


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
    results: list[list[Generated]] = []
    with _sampling(model, tokenizer, settings.seed):
        for start in range(0, len(prompts), batch_size):
            sampled = _sample(model, tokenizer, prompts[start:start + batch_size], settings, responses_per_prompt)
            for row, tokens in enumerate(sampled.response_ids):
                if row % responses_per_prompt == 0:
                    results.append([])
                results[-1].append(_decode(tokenizer, tokens))
    return results


@torch.inference_mode()
def generate_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    *,
    responses_per_prompt: int = 1,
    top_k: int | None = None,
) -> SampledTokens:
    """The same sampling as `generate`, in one batch, returning token ids
    instead of text. `top_k=0` samples from the whole distribution (the
    library's default keeps the 50 likeliest tokens): what an algorithm that
    computes the policy's log-probabilities itself needs to sample from."""
    with _sampling(model, tokenizer, settings.seed):
        return _sample(model, tokenizer, prompts, settings, responses_per_prompt, top_k=top_k)


@contextmanager
def _sampling(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int) -> Iterator[None]:
    """Eval mode, left padding and the seed's random numbers for the duration;
    the caller's model mode, padding side and random state afterwards."""
    was_training = model.training
    model.eval()
    # Decoder-only models continue from the right end: pad on the left.
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        tokenizer.padding_side = padding_side
        torch.random.set_rng_state(generator_state)
        model.train(was_training)


def _sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    responses_per_prompt: int,
    *,
    top_k: int | None = None,
) -> SampledTokens:
    device = next(model.parameters()).device
    chunk = [format_prompt(tokenizer, p) for p in prompts]
    encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    sampling = settings.temperature > 0
    extra = {"top_k": top_k} if sampling and top_k is not None else {}
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
        **extra,
    )
    prompt_length = encoded["input_ids"].shape[1]
    return SampledTokens(
        prompt_ids=output[:, :prompt_length],
        prompt_mask=encoded["attention_mask"].repeat_interleave(responses_per_prompt, dim=0),
        response_ids=output[:, prompt_length:],
    )


def _decode(tokenizer: PreTrainedTokenizerBase, tokens: torch.Tensor) -> Generated:
    ids = tokens.tolist()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    finished = eos in ids
    if finished:
        ids = ids[: ids.index(eos)]
    ids = [i for i in ids if i != pad]
    return Generated(text=tokenizer.decode(ids, skip_special_tokens=True).strip(), tokens=len(ids), finished=finished)
