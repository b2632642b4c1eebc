"""Eval answers: a training stage answers fixed prompts while it trains.

Shared by every stage that trains a policy: the model answers the same
prompts before the first step, every `sample_every` steps and after the
last, and the answers go to the store as samples with their step and the
checkpoint holding those weights, so a person watches answers change.

The prompts are the user's task, not the demo's: `eval_prompts` when the
spec names them, else a share of the stage's own prompts that it held out
and never trains on (SFT and DPO: the prompts of their held-out examples;
PPO, RLOO and GRPO: a few of their prompts, set aside).

A judge is asked only where the spec names one (`eval_judge`: `demo`, or a
`module:function`; engine/feedback/judges.py). It scores each answer to a
prompt it can score, and the mean is the metric `eval/judge_score` (with
`eval/judge_exact`, the share of perfect scores). Without one, no score is
made up: the answers are stored for people to read.

`EvalAnswers` does the answering and recording for any training loop (PPO
calls it from its own loop, and adds the reward model's score);
`EvalAnswersCallback` calls it at the Trainer's steps (SFT, DPO, RLOO, GRPO).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from engine.feedback.judges import Judge, load_judge
from engine.spec.fields import EvalAnswerSettings
from engine.stages.common.callbacks import CHECKPOINT_PREFIX, StageCallback
from engine.stages.common.context import StageContext
from engine.stages.common.data_loading import load_prompts
from engine.stages.common.generation import SamplingSettings, generate

#: where held-out eval prompts came from, in the resolved config
HELD_OUT_SOURCE = "held out of the stage's own data"

#: scores of (prompts, responses) besides the judge's, e.g. a reward model's
ExtraScorer = Callable[[list[str], list[str]], list[float]]


class EvalAnswers:
    """The fixed eval prompts, answered on request (`answer`) and stored as
    samples, each with its step and the checkpoint holding those weights.

    Prompts the judge can score get its score in the sample's meta, and
    their mean is logged as `eval/judge_score` (with `eval/judge_exact`)."""

    def __init__(self, ctx: StageContext, tokenizer: PreTrainedTokenizerBase, prompts: list[dict[str, Any]],
                 settings: SamplingSettings, *, judge: Judge | None, source: str | None = None) -> None:
        self.ctx = ctx
        self.tokenizer = tokenizer
        self.texts = [p["text"] for p in prompts]
        self.source = source  # where the prompts came from, for the resolved config
        self.settings = settings
        self.judge = judge
        # None where the judge cannot score a prompt: a score for it would be made up.
        self.readings = [judge.reads(t) if judge is not None else None for t in self.texts]
        self.judged = sum(r is not None for r in self.readings)
        self.prompt_ids = ctx.add_prompts([{**p, "meta": reading or {}}
                                           for p, reading in zip(prompts, self.readings)]) \
            if prompts and ctx.is_main_process else []

    @classmethod
    def for_stage(cls, ctx: StageContext, tokenizer: PreTrainedTokenizerBase, *,
                  held_out: Sequence[dict[str, Any]] = (), **columns: str) -> EvalAnswers:
        """The eval answers a training stage's spec asks for: the first
        `eval_prompt_count` of its `eval_prompts` (read with `columns` such as
        prompt_field), or, with none named, of `held_out` (the prompts the
        stage set aside from its own data); answered at `sample_temperature`,
        up to `sample_max_new_tokens` tokens, scored by `eval_judge` if named."""
        spec = _settings(ctx)
        prompts: list[dict[str, Any]] = []
        source: str | None = None
        if spec.eval_prompt_count > 0 and spec.eval_prompts is not None:
            prompts = load_prompts(ctx.resolve(spec.eval_prompts), cache_dir=ctx.cache_dir,
                                   count=spec.eval_prompt_count, **columns)
            source = spec.eval_prompts
        elif spec.eval_prompt_count > 0:
            prompts = list(held_out)[: spec.eval_prompt_count]
            source = HELD_OUT_SOURCE
            if not prompts:
                ctx.log("no eval answers: the stage held out no prompts of its data (too few distinct prompts, "
                        "or none held out); name some with eval_prompts", level="warning")
        settings = SamplingSettings(
            temperature=spec.sample_temperature, max_new_tokens=spec.sample_max_new_tokens, seed=ctx.spec.seed
        )
        judge = load_judge(spec.eval_judge) if spec.eval_judge is not None else None
        return cls(ctx, tokenizer, prompts, settings, judge=judge, source=source if prompts else None)

    def describe(self) -> dict[str, Any]:
        """What the resolved config records about the eval prompts."""
        return {"source": self.source, "count": len(self.texts),
                "judge": self.judge.name if self.judge is not None else None, "judged": self.judged,
                "sampling": self.settings.to_dict()}

    def answer(self, model: PreTrainedModel, step: int, checkpoint: str | None, *,
               autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
               reward_model: ExtraScorer | None = None, sample_meta: dict[str, Any] | None = None) -> None:
        """Answer every eval prompt with `model` and store the answers at
        `step`; call it on the main process only. `autocast` wraps the
        model's work (mixed precision); `reward_model`'s scores go to each
        sample's meta as `rm_score` and their mean to `eval/rm_score`;
        `sample_meta` is added to every sample's meta."""
        if not self.texts:
            return
        started = time.perf_counter()
        with autocast():
            answers = [a for [a] in generate(model, self.tokenizer, self.texts, self.settings)]
        seconds = round((time.perf_counter() - started) / len(answers), 4)
        rm_scores: list[float] | None = None
        if reward_model is not None:
            with autocast():
                rm_scores = reward_model(self.texts, [a.text for a in answers])
        samples, judged = [], []
        for index, (prompt_id, text, reading, answer) in enumerate(
                zip(self.prompt_ids, self.texts, self.readings, answers)):
            meta: dict[str, Any] = {**answer.meta(), "seconds": seconds, **(sample_meta or {})}
            if rm_scores is not None:
                meta["rm_score"] = round(rm_scores[index], 4)
            if reading is not None and self.judge is not None:
                [meta["score"]] = self.judge.score(text, [answer.text])
                judged.append(meta["score"])
            samples.append({"prompt_id": prompt_id, "response": answer.text, "meta": meta})
        self.ctx.log_samples(samples, step=step, checkpoint=checkpoint)
        metrics: dict[str, float] = {}
        if rm_scores is not None:
            metrics["eval/rm_score"] = sum(rm_scores) / len(rm_scores)
        if judged:
            metrics["eval/judge_score"] = sum(judged) / len(judged)
            metrics["eval/judge_exact"] = sum(s == 1.0 for s in judged) / len(judged)
        if metrics:
            self.ctx.log_metrics(step, metrics)
        if judged:
            self.ctx.log(f"step {step}: judge score {metrics['eval/judge_score']:.3f} on {len(judged)} eval "
                         f"prompts ({metrics['eval/judge_exact']:.0%} exact)")


def _settings(ctx: StageContext) -> EvalAnswerSettings:
    if not isinstance(ctx.spec, EvalAnswerSettings):
        raise TypeError(f"a {type(ctx.spec).__name__} has no eval prompts' settings (EvalAnswerSettings)")
    return ctx.spec


class EvalAnswersCallback(TrainerCallback):
    """Answers the eval prompts before the first step, every `every` steps
    and after the last, as a Trainer callback.

    Each sample records its step and the checkpoint holding those weights:
    the parent model at step 0 (its folder, or `builtin:NAME` / `hub:ID`),
    `checkpoint-STEP` when the Trainer saves one at that step (it does at
    the last step), otherwise none."""

    def __init__(self, answers: EvalAnswers, *, every: int, start_checkpoint: str | None) -> None:
        self.answers = answers
        self.every = every
        self.start_checkpoint = start_checkpoint
        self.stage_callback: StageCallback | None = None

    @classmethod
    def for_stage(cls, ctx: StageContext, tokenizer: PreTrainedTokenizerBase, *, start_checkpoint: str | None,
                  held_out: Sequence[dict[str, Any]] = (), **columns: str) -> EvalAnswersCallback:
        """The callback a training stage's spec asks for: `EvalAnswers.for_stage`,
        answered every `sample_every` steps."""
        return cls(EvalAnswers.for_stage(ctx, tokenizer, held_out=held_out, **columns),
                   every=_settings(ctx).sample_every, start_checkpoint=start_checkpoint)

    def describe(self) -> dict[str, Any]:
        """What the resolved config records about the eval prompts."""
        return self.answers.describe()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: PreTrainedModel | None = None, **kwargs: Any) -> None:
        if state.global_step == 0:  # a resumed run has its step-0 answers already
            self._answer(model, state, 0, self.start_checkpoint)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: PreTrainedModel | None = None, **kwargs: Any) -> None:
        step = state.global_step
        if self.stage_callback is not None and self.stage_callback.cancelled:
            return  # stop quickly; the resumed run answers at the next multiple
        if step % self.every and step < state.max_steps:
            return
        # DefaultFlowCallback ran first: should_save says whether these exact
        # weights are about to be saved as checkpoint-{step}.
        checkpoint = str(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{step}") if control.should_save else None
        self._answer(model, state, step, checkpoint)

    def _answer(self, model: PreTrainedModel | None, state: TrainerState, step: int,
                checkpoint: str | None) -> None:
        if model is not None and state.is_world_process_zero:
            self.answers.answer(model, step, checkpoint)
