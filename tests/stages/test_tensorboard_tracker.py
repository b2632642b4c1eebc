"""report_to = ["tensorboard"]: event files that TensorBoard's own reader loads
with the keys, steps and values of the store (issue 15)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.stages.common.trackers import TENSORBOARD_DIR, TensorBoardTracker
from engine.stages.pretrain import stage as pretrain
from engine.stages.pretrain.spec import PretrainSpec
from tests.tiny_models import save_tiny_model


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: every scalar of the folder's event files, per tag."""
    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def as_tensorboard_keeps_it(value: float) -> float:
    return float(np.float32(value))  # TensorBoard's scalars are float32


@pytest.mark.slow
def test_a_stage_reporting_to_tensorboard_writes_what_the_store_holds(make_context, workspace, tmp_path) -> None:
    # A ~100k-parameter model and a few docstrings: no built-in corpus or tokenizer to build.
    model = save_tiny_model(tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join((inspect.getdoc(obj) or "").split())
                                 for obj in (str, dict, list, set, int, float, bytes, Path, print, open)))
    spec = PretrainSpec(
        from_=f"path:{model}", data=f"path:{corpus}", block_size=32, batch_size=4, max_steps=6, warmup_steps=1,
        eval_every=3, eval_batches=2, eval_fraction=0.3, save_every=6, report_to=["tensorboard"],
    )
    ctx = make_context(spec)

    ctx.open_trackers()  # as the worker does when a stage starts
    pretrain.run(ctx)
    ctx.close()  # and when it ends

    store = workspace.store
    in_store = {
        key: [(int(p.step), as_tensorboard_keeps_it(p.value))
              for p in store.metric_series(stage_id=ctx.stage_id, key=key)]
        for key in store.stage_metric_keys(stage_id=ctx.stage_id)
    }
    assert {"train/loss", "eval/loss"} <= set(in_store) and len(in_store["train/loss"]) == 6
    folder = ctx.output_dir / TENSORBOARD_DIR
    assert scalars(folder) == in_store
    said = [line.message for line in store.logs_since(run_id=ctx.run_id)]
    assert f"tensorboard: event files in {folder} (tensorboard --logdir {folder})" in said


def test_a_rerun_replaces_its_steps_in_tensorboard_as_in_the_store(tmp_path) -> None:
    first = TensorBoardTracker(tmp_path, restart_step=0)
    for step in range(6):
        first.write(step, {"train/loss": 10.0 - step, "train/grad_norm": float("inf")}, wall_time=1000.0 + step)
    first.close()
    # Resumed from checkpoint-3: the worker drops the store's points after step 3, and steps 4 and 5 run again.
    second = TensorBoardTracker(tmp_path, restart_step=4)
    for step in (4, 5):
        second.write(step, {"train/loss": 0.5 * step}, wall_time=2000.0 + step)
    second.close()

    shown = scalars(tmp_path)
    assert shown["train/loss"] == [(0, 10.0), (1, 9.0), (2, 8.0), (3, 7.0), (4, 2.0), (5, 2.5)]
    assert shown["train/grad_norm"] == [(step, float("inf")) for step in range(4)]
