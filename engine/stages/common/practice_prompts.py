"""The prompts an online stage (PPO, RLOO, GRPO) practises on, and those it holds out.

Prompts that leave no room for `max_new_tokens` in the policy's context are
left out. With no `eval_prompts` named, a few of the rest are set aside for
the eval answers and never practised on, so what a person reads (and a
named judge scores) is the policy on questions of the user's own task that
it did not train on.
"""

from __future__ import annotations

from typing import Any, Protocol

from transformers import PreTrainedTokenizerBase

from engine.errors import StageFailed
from engine.stages.common.context import Source, StageContext
from engine.stages.common.data_loading import hold_out_prompts, load_prompts
from engine.stages.common.generation import format_prompt
from engine.stages.common.inference import max_positions


class PromptSettings(Protocol):
    """What PPO's and RLOO/GRPO's specs say about their prompts."""

    @property
    def prompts(self) -> str | None: ...
    @property
    def prompt_field(self) -> str: ...
    @property
    def max_prompts(self) -> int | None: ...
    @property
    def max_new_tokens(self) -> int: ...
    @property
    def eval_prompts(self) -> str | None: ...
    @property
    def eval_prompt_count(self) -> int: ...
    @property
    def seed(self) -> int: ...


def practice_prompts(ctx: StageContext, spec: PromptSettings, tokenizer: PreTrainedTokenizerBase,
                     policy_source: Source) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(to practise on, held out for the eval answers): distinct prompts as
    the store keeps them ({"text", "source", "reference"})."""
    if spec.prompts is None:  # the pipeline loader requires them, or fills in the demo's for a demo model
        raise StageFailed("no prompts to practise on: name them with `prompts`")
    rows = load_prompts(ctx.resolve(spec.prompts), cache_dir=ctx.cache_dir, count=spec.max_prompts,
                        prompt_field=spec.prompt_field)
    limit = max_positions(policy_source)
    if limit is not None:
        lengths = [len(ids) for ids in tokenizer([format_prompt(tokenizer, r["text"]) for r in rows],
                                                 add_special_tokens=False)["input_ids"]]
        fitting = [row for row, n in zip(rows, lengths) if n + spec.max_new_tokens <= limit]
        if len(fitting) < len(rows):
            ctx.log(f"prompts: {len(rows) - len(fitting)} left out, too long to leave {spec.max_new_tokens} "
                    "new tokens within the policy's context", level="warning")
        rows = fitting
    if not rows:
        raise StageFailed("every prompt is too long for the policy's context; lower max_new_tokens")
    if spec.eval_prompts is not None:
        return rows, []
    practice, held_out = hold_out_prompts(rows, spec.eval_prompt_count, spec.seed)
    if held_out:
        ctx.log(f"prompts: {len(held_out)} of {len(rows)} held out for the eval answers, never practised on")
    return practice, held_out
