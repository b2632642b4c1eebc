"""The one tap for experiment trackers (issue 15): every batch of metrics the
store takes goes on to the stage's trackers, row for row, and nothing the store
lacks. Fakes stand in for the trackers here (no package needed); the real
TensorBoard writer is checked in test_tensorboard_tracker.py."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from typing import Any

import pytest

import store.db
from engine.errors import StageFailed
from engine.stages.common import context as context_module
from engine.stages.common import trackers as trackers_module
from engine.stages.common.context import StageContext
from engine.stages.common.trackers import Trackers, by_step, start_trackers
from engine.stages.pretrain.spec import PretrainSpec
from tests.stages.test_locked_store import write_lock_held


class FakeTracker:
    def __init__(self, name: str = "fake", fail_on_write: bool = False, fail_on_close: bool = False) -> None:
        self.name = name
        self.where = f"{name}'s memory"
        self.points: list[tuple[int, str, float]] = []
        self.flushes = 0
        self.closed = False
        self.fail_on_write = fail_on_write
        self.fail_on_close = fail_on_close

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        if self.fail_on_write:
            raise ConnectionError("the tracker's server went away")
        self.points.extend((step, key, value) for key, value in metrics.items())

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        if self.fail_on_close:
            raise OSError(28, "No space left on device")
        self.closed = True


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """start_trackers replaced: the context gets these fake trackers; the call's arguments are kept."""
    made: dict[str, Any] = {"trackers": [FakeTracker("one"), FakeTracker("two")]}

    def fake_open(names: list[str], **kwargs: Any) -> Trackers:
        made["names"], made["kwargs"] = names, kwargs
        return Trackers(made["trackers"], say=kwargs["say"])

    monkeypatch.setattr(context_module, "start_trackers", fake_open)
    return made


def reporting(**fields: Any) -> PretrainSpec:
    # Validation checks that the named package is installed; the fakes need none.
    return PretrainSpec().model_copy(update={"report_to": ["wandb"], **fields})


def stored(workspace, ctx: StageContext) -> list[tuple[int, str, float]]:
    points = [(int(p.step), key, p.value)
              for key in workspace.store.stage_metric_keys(stage_id=ctx.stage_id)
              for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]
    return sorted(points)


def test_the_trackers_get_what_the_store_took_row_for_row(make_context, workspace, fakes) -> None:
    ctx = make_context(reporting())
    ctx.open_trackers()  # as the worker does before the stage runs
    for step in range(5):
        ctx.log_metrics(step, {"train/loss": 2.0 - step / 10, "train/learning_rate": 1e-3})
    ctx.log_metrics(2, {"eval/loss": 1.5})
    ctx.log_metrics(5, {"train/loss": float("nan")})  # diverged: stored (and sent) as inf
    ctx.close()

    assert fakes["names"] == ["wandb"]
    assert fakes["kwargs"]["run_name"] == "t" and fakes["kwargs"]["stage_name"] == "pretrain"
    assert fakes["kwargs"]["stage_dir"] == ctx.output_dir
    assert fakes["kwargs"]["restart_step"] == 0  # a first attempt: anything older is replaced
    in_store = stored(workspace, ctx)
    assert len(in_store) == 12 and (5, "train/loss", math.inf) in in_store
    for tracker in fakes["trackers"]:
        assert sorted(tracker.points) == in_store
        assert tracker.closed and tracker.flushes >= 1


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each connection waits this long for a lock (30 s in use); set before the store's first connection.
    monkeypatch.setattr(store.db, "BUSY_TIMEOUT_MS", 100)


def test_a_locked_store_holds_the_trackers_back_too(short_busy_timeout, make_context, workspace, fakes) -> None:
    ctx = make_context(reporting())
    ctx.open_trackers()
    with write_lock_held(workspace.db_path):
        ctx.log_metrics(1, {"train/loss": 2.0})
        ctx.flush()  # the store cannot take them: kept for later, and no tracker sees them
        assert [t.points for t in fakes["trackers"]] == [[], []]
    ctx.flush()
    assert stored(workspace, ctx) == [(1, "train/loss", 2.0)]
    assert [t.points for t in fakes["trackers"]] == [[(1, "train/loss", 2.0)]] * 2


def test_a_failing_tracker_is_dropped_said_in_the_log_and_training_goes_on(make_context, workspace, fakes) -> None:
    fakes["trackers"][0].fail_on_write = True
    ctx = make_context(reporting())
    ctx.open_trackers()
    ctx.log_metrics(1, {"train/loss": 2.0})
    ctx.flush()
    ctx.log_metrics(2, {"train/loss": 1.9})
    ctx.close()

    assert fakes["trackers"][1].points == [(1, "train/loss", 2.0), (2, "train/loss", 1.9)]
    assert not fakes["trackers"][0].closed  # dropped at its failure: nothing more is asked of it
    lines = [line.message for line in workspace.store.logs_since(run_id=ctx.run_id)]
    assert any(line.startswith("one failed while writing (ConnectionError: the tracker's server went away)")
               for line in lines), lines
    assert stored(workspace, ctx) == [(1, "train/loss", 2.0), (2, "train/loss", 1.9)]


def test_a_tracker_failing_as_the_stage_ends_does_not_fail_it(make_context, workspace, fakes) -> None:
    fakes["trackers"][0].fail_on_close = True
    ctx = make_context(reporting())
    ctx.open_trackers()
    ctx.log_metrics(1, {"train/loss": 2.0})
    ctx.close()  # the worker's last call before it records the stage as succeeded: must not raise

    assert fakes["trackers"][1].closed and fakes["trackers"][1].points == [(1, "train/loss", 2.0)]
    lines = [line.message for line in workspace.store.logs_since(run_id=ctx.run_id)]
    assert any(line.startswith("one failed while closing (OSError: [Errno 28] No space left on device)")
               for line in lines), lines
    assert stored(workspace, ctx) == [(1, "train/loss", 2.0)]


def test_only_the_main_process_opens_trackers(make_context, workspace, fakes) -> None:
    main = make_context(reporting())
    other = StageContext(
        store=workspace.store, run_id=main.run_id, stage_id=main.stage_id, stage_name="pretrain",
        spec=main.spec, output_dir=main.output_dir, cache_dir=main.cache_dir, stage_outputs={},
        is_main_process=False,
    )
    other.open_trackers()
    other.log_metrics(1, {"train/loss": 2.0})
    other.close()
    assert "names" not in fakes


def test_no_report_to_opens_nothing(make_context, fakes) -> None:
    ctx = make_context(PretrainSpec())
    ctx.open_trackers()
    ctx.log_metrics(1, {"train/loss": 2.0})
    ctx.close()
    assert "names" not in fakes


def test_a_resumed_stage_restarts_its_trackers_where_the_store_drops_points(make_context, fakes, tmp_path) -> None:
    first = make_context(reporting())
    first.open_trackers()
    assert fakes["kwargs"]["restart_step"] == 0
    make_context(reporting(), like=first, resume_from=tmp_path / "checkpoint-20").open_trackers()
    assert fakes["kwargs"]["restart_step"] == 21  # the worker drops the store's points after step 20
    make_context(reporting(), like=first, resume_from=tmp_path / "final").open_trackers()
    assert fakes["kwargs"]["restart_step"] is None  # nothing dropped, nothing to restart


def test_a_missing_package_fails_the_stage_at_its_start_in_one_line(tmp_path, monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    said: list[str] = []
    with pytest.raises(StageFailed) as failed:
        start_trackers(["wandb"], stage_dir=tmp_path, run_name="r", stage_name="s", kind="sft", config={},
                       restart_step=0, say=said.append)
    assert str(failed.value) == ("report_to names wandb, but the wandb package is not installed here: "
                                 "pip install wandb (or pip install 'rlhf-console[trackers]'), then rlhf resume")


def test_trackers_started_before_a_failing_one_are_closed_again(tmp_path, monkeypatch) -> None:
    started = FakeTracker("tensorboard")
    monkeypatch.setattr(trackers_module, "TensorBoardTracker", lambda *a, **k: started)

    def no_wandb(*args: Any, **kwargs: Any) -> None:
        raise StageFailed("no wandb")

    monkeypatch.setattr(trackers_module, "WandbTracker", no_wandb)
    said: list[str] = []
    with pytest.raises(StageFailed, match="no wandb"):
        start_trackers(["tensorboard", "wandb"], stage_dir=tmp_path, run_name="r", stage_name="s", kind="sft",
                       config={}, restart_step=0, say=said.append)
    assert started.closed
    assert said == ["tensorboard: tensorboard's memory"]


def test_rows_logged_together_are_grouped_and_nothing_is_merged_away() -> None:
    rows = [{"step": 1, "key": "a", "value": 1.0, "wall_time": 10.0},
            {"step": 1, "key": "b", "value": 2.0, "wall_time": 10.0},
            {"step": 1, "key": "c", "value": 3.0, "wall_time": 11.0},  # the same step, logged later
            {"step": 2, "key": "a", "value": 4.0, "wall_time": 12.0},
            {"step": 2, "key": "a", "value": 5.0, "wall_time": 12.0}]  # logged twice at once
    assert by_step(rows) == [(1, {"a": 1.0, "b": 2.0}, 10.0), (1, {"c": 3.0}, 11.0), (2, {"a": 4.0}, 12.0),
                             (2, {"a": 5.0}, 12.0)]
