"""Device/precision choice, shared TrainingArguments, and the StageCallback's
reporting, without training anything."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from engine.errors import StageFailed
from engine.stages.common import setup as runtime
from engine.stages.common.callbacks import StageCallback, metric_name
from engine.stages.pretrain.spec import PretrainSpec

requires_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")


@requires_no_gpu
def test_auto_on_a_cpu_machine_is_cpu_fp32() -> None:
    chosen = runtime.choose_runtime("auto", "auto")
    assert (chosen.device, chosen.bf16, chosen.fp16) == ("cpu", False, False)
    assert chosen.describe() == "cpu (fp32)"


@requires_no_gpu
def test_impossible_device_or_precision_fails_clearly() -> None:
    with pytest.raises(StageFailed, match="no CUDA GPU"):
        runtime.choose_runtime("cuda", "auto")
    with pytest.raises(StageFailed, match="fp16"):
        runtime.choose_runtime("cpu", "fp16")
    assert runtime.choose_runtime("cpu", "bf16").bf16  # bf16 autocast works on CPUs


def test_training_kwargs_build_valid_arguments(tmp_path: Path) -> None:
    spec = PretrainSpec(max_steps=7, batch_size=2, eval_every=3, save_every=5, keep_checkpoints=1, seed=4)
    kwargs = runtime.training_kwargs(spec, runtime.choose_runtime("cpu", "fp32"), tmp_path)
    args = TrainingArguments(**kwargs)
    assert (args.max_steps, args.per_device_train_batch_size, args.save_total_limit) == (7, 2, 1)
    assert args.use_cpu and not args.bf16
    assert args.report_to == [] or args.report_to == "none"
    assert args.seed == 4 and args.data_seed == 4


def test_metric_names() -> None:
    assert metric_name("loss") == "train/loss"
    assert metric_name("grad_norm") == "train/grad_norm"
    assert metric_name("eval_loss") == "eval/loss"
    assert metric_name("rewards/chosen") == "train/rewards/chosen"
    assert metric_name("eval_rewards/chosen") == "eval/rewards/chosen"
    assert metric_name("train_loss") == "train/mean_loss"  # the run summary stays out of train/loss


def _state(step: int) -> TrainerState:
    state = TrainerState()
    state.global_step, state.max_steps = step, 10
    return state


def test_callback_reports_namespaced_metrics_and_perplexity(make_context, workspace) -> None:
    ctx = make_context(PretrainSpec())
    callback = StageCallback(ctx, tokens_per_step=1000)
    args = SimpleNamespace(output_dir=str(ctx.checkpoints_dir), device=torch.device("cpu"))
    control = TrainerControl()
    callback.on_train_begin(args, _state(0), control)
    callback.on_step_end(args, _state(1), control)
    callback.on_log(args, _state(1), control, logs={"loss": 2.5, "learning_rate": 1e-3, "grad_norm": 0.7, "epoch": 0.1})
    callback.on_log(args, _state(1), control, logs={"eval_loss": 2.0, "eval_runtime": 0.5, "epoch": 0.1})
    callback.on_log(
        args, _state(1), control, logs={"train_runtime": 3.0, "train_loss": 2.2, "total_flos": 1e9, "epoch": 0.1}
    )
    ctx.flush()

    def values(key: str) -> list[float]:
        return [p.value for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]

    assert values("train/loss") == [2.5]
    assert values("train/learning_rate") == [1e-3]
    assert values("train/grad_norm") == [0.7]
    assert values("train/epoch") == [0.1]  # once, not once per log
    assert values("eval/loss") == [2.0]
    assert values("eval/perplexity") == [pytest.approx(math.exp(2.0))]
    assert values("train/mean_loss") == [2.2]
    assert len(values("train/tokens_per_second")) == 1 and values("train/tokens_per_second")[0] > 0
    assert values("train/total_flos") == []
    assert workspace.store.get_stage(stage_id=ctx.stage_id).step == 1


def test_callback_stops_and_asks_for_a_checkpoint(make_context) -> None:
    ctx = make_context(PretrainSpec())
    callback = StageCallback(ctx)
    args = SimpleNamespace(output_dir=str(ctx.checkpoints_dir), device=torch.device("cpu"))
    control = TrainerControl()
    callback.on_step_end(args, _state(3), control)
    assert not control.should_training_stop and not callback.cancelled
    ctx.request_stop()
    callback.on_step_end(args, _state(4), control)
    assert control.should_training_stop and control.should_save and callback.cancelled


def test_callback_records_and_forgets_checkpoints(make_context, workspace) -> None:
    ctx = make_context(PretrainSpec())
    callback = StageCallback(ctx)
    args = SimpleNamespace(output_dir=str(ctx.checkpoints_dir), device=torch.device("cpu"))
    control = TrainerControl()
    callback.on_train_begin(args, _state(0), control)
    for step in (2, 4):
        (ctx.checkpoints_dir / f"checkpoint-{step}").mkdir(parents=True)
        callback.on_save(args, _state(step), control)
    (ctx.checkpoints_dir / "checkpoint-2").rmdir()  # what save_total_limit does
    (ctx.checkpoints_dir / "checkpoint-6").mkdir()
    callback.on_save(args, _state(6), control)
    steps = [c.step for c in workspace.store.list_checkpoints(stage_id=ctx.stage_id)]
    assert steps == [4, 6]
