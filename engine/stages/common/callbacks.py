"""`StageCallback`: the bridge from a transformers Trainer (or a TRL trainer)
to the `StageContext`.

It reports what the Trainer logs as slash-namespaced metrics, progress after
every step, and every checkpoint the Trainer writes or rotates away; and it
turns a cancel request into "save a checkpoint at this step, then stop".
`attach_stage_callback` also removes the Trainer's own printing callbacks
(nothing in a worker writes to the terminal) and makes the Trainer write its
checkpoints whole or not at all (engine/stages/common/checkpoint_writing.py).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from engine.errors import StageCancelled, StageFailed
from engine.runtime.checkpoints import CHECKPOINT_NAME
from engine.stages.common.checkpoint_writing import (
    CheckpointWriter,
    record_and_prune,
    write_trainer_checkpoints_atomically,
)
from engine.stages.common.context import StageContext

CHECKPOINT_PREFIX = "checkpoint-"

# The summary the Trainer logs once when train() returns. Its `train_loss` is
# the mean over the whole call, which must not land in the train/loss series.
_SUMMARY_KEYS = {
    "train_runtime": "train/runtime",
    "train_samples_per_second": "train/samples_per_second",
    "train_steps_per_second": "train/steps_per_second",
    "train_loss": "train/mean_loss",
}
_DROPPED_KEYS = {"total_flos"}  # an estimate nobody reads


def metric_name(key: str) -> str:
    """`loss` -> `train/loss`, `eval_loss` -> `eval/loss`; TRL's `rewards/chosen`
    -> `train/rewards/chosen` and `eval_rewards/chosen` -> `eval/rewards/chosen`."""
    if key in _SUMMARY_KEYS:
        return _SUMMARY_KEYS[key]
    if key.startswith("eval_"):
        return "eval/" + key.removeprefix("eval_")
    return "train/" + key


class StageCallback(TrainerCallback):
    """Reports a Trainer's progress to a StageContext and stops it on request.

    `tokens_per_step` (all processes together) enables train/tokens_per_second;
    stages with variable-length batches can leave it out. `perplexity` adds
    eval/perplexity = exp(eval/loss), which means something only when the
    loss is a language model's cross-entropy (not for DPO's loss)."""

    def __init__(self, ctx: StageContext, *, tokens_per_step: int | None = None, perplexity: bool = True) -> None:
        self.ctx = ctx
        self.tokens_per_step = tokens_per_step
        self.perplexity = perplexity
        self.cancelled = False
        #: set by attach_stage_callback: checkpoints are staged, published and pruned through it
        self.writer: CheckpointWriter | None = None
        self._known_checkpoints: set[Path] = set()
        # Throughput window: from the previous train log to this one, minus the
        # time spent evaluating and saving, which is not training.
        self._window_start = 0.0
        self._window_step = 0
        self._paused = 0.0
        self._last_event = 0.0

    # --- lifecycle ----------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Checkpoints already on disk (a resumed run) may be rotated away later.
        self._known_checkpoints = _checkpoint_folders(args.output_dir)
        self._window_start = self._last_event = time.perf_counter()
        self._window_step = state.global_step
        self._paused = 0.0

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last_event = time.perf_counter()
        self.ctx.set_progress(state.global_step, state.max_steps)
        # At the last step the work is done: finishing beats a checkpoint to resume.
        if state.global_step < state.max_steps and self._stop_requested(args):
            # Saving here makes the Trainer write checkpoint-{global_step}
            # before it leaves the loop: a cancelled run resumes from this step.
            control.should_save = True
            control.should_training_stop = True
            self.cancelled = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.ctx.flush()

    # --- metrics ------------------------------------------------------------

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        # Eval results and the end-of-training summary repeat the epoch of the
        # step's train log: one point per step is enough.
        repeats_epoch = "train_runtime" in logs or any(k.startswith("eval_") for k in logs)
        metrics: dict[str, float] = {}
        for key, value in logs.items():
            if key in _DROPPED_KEYS or (repeats_epoch and key == "epoch") or not _is_number(value):
                continue
            metrics[metric_name(key)] = value
        if "eval_loss" in logs and self.perplexity:
            metrics["eval/perplexity"] = _perplexity(logs["eval_loss"])
        if "loss" in logs and self.tokens_per_step:
            metrics["train/tokens_per_second"] = self._tokens_per_second(state.global_step)
        if metrics:
            self.ctx.log_metrics(state.global_step, metrics)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._pause_since_last_event()

    def _tokens_per_second(self, step: int) -> float:
        now = time.perf_counter()
        seconds = now - self._window_start - self._paused
        tokens = (step - self._window_step) * self.tokens_per_step  # type: ignore[operator]
        self._window_start = self._last_event = now
        self._window_step = step
        self._paused = 0.0
        return tokens / seconds if seconds > 0 else 0.0

    def _pause_since_last_event(self) -> None:
        now = time.perf_counter()
        self._paused += now - self._last_event
        self._last_event = now

    # --- checkpoints --------------------------------------------------------

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._pause_since_last_event()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if self.writer is not None:
                # Published whole by now; old ones are renamed away, forgotten, then deleted.
                record_and_prune(self.ctx, self.writer, state.global_step, folder)
            else:
                # A Trainer left to itself: save_total_limit has already deleted the oldest folders.
                self.ctx.checkpoint_saved(state.global_step, folder)
                present = _checkpoint_folders(args.output_dir)
                self.ctx.checkpoints_removed(sorted(self._known_checkpoints - present))
                self._known_checkpoints = present
        self._pause_since_last_event()  # the store writes above are bookkeeping too

    # --- stopping -----------------------------------------------------------

    def _stop_requested(self, args: TrainingArguments) -> bool:
        """Whether to stop after this step, agreed by all processes.

        Each process polls the store on its own clock, so they can see a
        cancel at different steps; one leaving the loop while another waits
        in the next gradient all-reduce would hang both. So they vote every
        step (one tiny all-reduce) and stop together if any saw it."""
        stop = self.ctx.should_stop()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            vote = torch.tensor([1 if stop else 0], device=args.device)
            torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MAX)
            stop = bool(vote.item())
        return stop


def attach_stage_callback(
    trainer: Trainer, ctx: StageContext, *, tokens_per_step: int | None = None, perplexity: bool = True
) -> StageCallback:
    """Replace the Trainer's printing callbacks with a StageCallback, and
    make the Trainer write checkpoints through a CheckpointWriter (staged,
    renamed into place whole, pruned without a half-deleted folder).

    With `disable_tqdm=True` the Trainer prints every log dict to stdout
    (PrinterCallback); otherwise it draws tqdm bars (ProgressCallback)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    callback = StageCallback(ctx, tokens_per_step=tokens_per_step, perplexity=perplexity)
    callback.writer = write_trainer_checkpoints_atomically(trainer, ctx)
    trainer.add_callback(callback)
    return callback


def _checkpoint_folders(output_dir: str) -> set[Path]:
    root = Path(output_dir)
    if not root.is_dir():
        return set()
    return {p for p in root.iterdir() if CHECKPOINT_NAME.match(p.name) and p.is_dir()}


def _perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def train_resumably(trainer: Trainer, ctx: StageContext, callback: StageCallback, *, max_steps: int) -> int:
    """Train to the end, or until a cancel; return the global step reached.

    Resuming (ctx.resume_from) restores weights, optimizer, scheduler, RNG
    states and the position in the data, so the curves continue exactly. On a
    cancel the Trainer has saved checkpoint-{step} and the callback recorded
    it, and this raises StageCancelled."""
    # A single process can stop before training starts; several processes
    # must agree through the callback's vote, whose first chance is after step 1.
    if trainer.args.world_size == 1 and ctx.should_stop():
        raise StageCancelled("cancelled before training started")
    resume_from = None
    if ctx.resume_from is not None:
        if not Path(ctx.resume_from).is_dir():
            raise StageFailed(f"cannot resume: checkpoint {ctx.resume_from} does not exist")
        resume_from = str(ctx.resume_from)
        done = _checkpoint_step(Path(resume_from))
        if done is not None and done >= max_steps:
            # The last checkpoint was whole but the stage died before recording success. The
            # Trainer checks for the end only after a step, so train() would run step max_steps + 1
            # on a schedule past its end: take the checkpoint's weights and state as they are.
            trainer._load_from_checkpoint(resume_from)  # noqa: SLF001  # the Trainer has no public "load only"
            trainer.state = TrainerState.load_from_json(str(Path(resume_from) / TRAINER_STATE_NAME))
            ctx.log(f"the checkpoint of step {done} is the last of {max_steps} steps: nothing left to train")
            return done
    trainer.train(resume_from_checkpoint=resume_from)
    step = trainer.state.global_step
    if callback.cancelled:
        # Wait for every process first: the launcher kills the rest as soon as
        # one exits with an error, which must not happen while the main one writes.
        ctx.flush()
        trainer.accelerator.wait_for_everyone()
        raise StageCancelled(f"stopped at step {step} of {max_steps}; checkpoint saved")
    return step


def _checkpoint_step(folder: Path) -> int | None:
    """The step a Trainer checkpoint was saved at, from its trainer_state.json."""
    try:
        return int(json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
