"""`EvalSampler`: a training stage answers fixed prompts while it trains.

Shared by the stages that train a policy (SFT, DPO): the model answers the
same prompts before the first step, every `every` steps and after the last,
and the answers go to the store as samples with their step and the
checkpoint holding those weights, so a person watches answers change. When
the prompts are demo-task prompts (engine/demo/task.py) the rule-based judge
scores each answer, and the mean is the metric `eval/judge_score`.
"""

from __future__ import annotations

import time
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

from engine.demo import task as demo_task
from engine.stages.common.callbacks import CHECKPOINT_PREFIX
from engine.stages.common.callbacks import StageCallback
from engine.stages.common.context import StageContext
from engine.stages.common.data_loading import load_prompts
from engine.stages.common.generation import SamplingSettings
from engine.stages.common.generation import generate


class EvalSampler(TrainerCallback):
    """Answers the fixed eval prompts before the first step, every `every`
    steps and after the last, and stores the answers as samples.

    Each sample records its step and the checkpoint holding those weights:
    the parent model at step 0 (its folder, or `builtin:NAME` / `hub:ID`),
    `checkpoint-STEP` when the Trainer saves one at that step (it does at
    the last step), otherwise none.
    Demo-task prompts get the judge's score in the sample's meta, and their
    mean is logged as `eval/judge_score` (with `eval/judge_exact`, the share
    of exact answers)."""

    @classmethod
    def for_stage(cls, ctx: StageContext, tokenizer: PreTrainedTokenizerBase, *, start_checkpoint: str | None,
                  **columns: str | None) -> EvalSampler:
        """The sampler a training stage's spec asks for: its `eval_prompts`
        (the first `eval_prompt_count`, read with `columns` such as
        prompt_field), answered every `sample_every` steps at
        `sample_temperature`, up to `sample_max_new_tokens` tokens."""
        spec = ctx.spec
        prompts: list[dict[str, Any]] = []
        if spec.eval_prompt_count > 0:
            prompts = load_prompts(ctx.resolve(spec.eval_prompts), cache_dir=ctx.cache_dir,
                                   count=spec.eval_prompt_count, **columns)
        settings = SamplingSettings(
            temperature=spec.sample_temperature, max_new_tokens=spec.sample_max_new_tokens, seed=spec.seed
        )
        sampler = cls(ctx, tokenizer, prompts, settings, every=spec.sample_every, start_checkpoint=start_checkpoint)
        sampler.source = spec.eval_prompts if prompts else None
        return sampler

    def describe(self) -> dict[str, Any]:
        """What the resolved config records about the eval prompts."""
        return {"source": self.source, "count": len(self.texts), "judged": self.judged,
                "sampling": self.settings.to_dict()}

    def __init__(self, ctx: StageContext, tokenizer: PreTrainedTokenizerBase, prompts: list[dict[str, Any]],
                 settings: SamplingSettings, *, every: int, start_checkpoint: str | None) -> None:
        self.ctx = ctx
        self.tokenizer = tokenizer
        self.texts = [p["text"] for p in prompts]
        self.source: str | None = None  # where the prompts came from, when known (for_stage)
        self.settings = settings
        self.every = every
        self.start_checkpoint = start_checkpoint
        self.stage_callback: StageCallback | None = None
        # Only prompts the judge can parse are scored: a score for any other
        # prompt would be made up.
        self.tasks = [demo_task.parse_task(t) for t in self.texts]
        self.judged = sum(t is not None for t in self.tasks)
        self.prompt_ids = ctx.add_prompts([{**p, "meta": {"kind": t.kind} if t else {}}
                                           for p, t in zip(prompts, self.tasks)]) \
            if prompts and ctx.is_main_process else []

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
        if not self.texts or model is None or not state.is_world_process_zero:
            return
        started = time.perf_counter()
        answers = generate(model, self.tokenizer, self.texts, self.settings)
        seconds = time.perf_counter() - started
        samples, scores = [], []
        for prompt_id, text, task, [answer] in zip(self.prompt_ids, self.texts, self.tasks, answers):
            meta: dict[str, Any] = {**answer.meta(), "seconds": round(seconds / len(self.texts), 4)}
            if task is not None:
                meta["score"] = demo_task.judge_score(text, answer.text)
                scores.append(meta["score"])
            samples.append({"prompt_id": prompt_id, "response": answer.text, "meta": meta})
        self.ctx.log_samples(samples, step=step, checkpoint=checkpoint)
        if scores:
            mean = sum(scores) / len(scores)
            exact = sum(s == 1.0 for s in scores) / len(scores)
            self.ctx.log_metrics(step, {"eval/judge_score": mean, "eval/judge_exact": exact})
            self.ctx.log(f"step {step}: judge score {mean:.3f} on {len(scores)} eval prompts "
                         f"({exact:.0%} exact)")
