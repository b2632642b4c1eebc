"""Round trips of every table through `Store`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from store import (
    ArtifactRead,
    CheckpointRead,
    EventRead,
    LogLineRead,
    MetricRead,
    MetricSummary,
    NewStage,
    NotFound,
    RunRead,
    RunStatus,
    SeriesPoint,
    StageRead,
    StageStatus,
    StoreError,
)

# --- runs -----------------------------------------------------------------------


def test_create_run_with_stages_round_trip(store, make_run):
    run = make_run("tiny", ("pretrain", "more"))
    assert isinstance(run, RunRead)
    assert run.id >= 1
    assert run.name == "tiny"
    assert run.status is RunStatus.QUEUED
    assert run.spec_text == '[stages.pretrain]\nkind = "pretrain"\n'
    assert run.spec == {"pretrain": {"kind": "pretrain", "max_steps": 10},
                        "more": {"kind": "pretrain", "max_steps": 10}}
    assert run.spec_path == "/specs/pipeline.toml"
    assert run.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - run.created_at) < timedelta(minutes=1)
    assert (run.started_at, run.finished_at, run.pid, run.host, run.heartbeat_at) == (None,) * 5
    assert (run.cancel_requested, run.error, run.attempt) == (False, None, 1)

    assert store.get_run(run.id) == run
    assert store.get_run(str(run.id)) == run
    assert store.get_run("tiny") == run

    stages = store.list_stages(run_id=run.id)
    assert [(s.name, s.kind, s.position, s.parent) for s in stages] == [
        ("pretrain", "pretrain", 0, None),
        ("more", "pretrain", 1, "pretrain"),
    ]
    assert all(isinstance(s, StageRead) and s.run_id == run.id for s in stages)
    assert stages[1].config == {"kind": "pretrain", "max_steps": 20}
    assert all(s.status is StageStatus.PENDING and s.step == 0 and s.attempt == 0 for s in stages)


def test_stages_listed_by_position_not_insertion(store):
    run = store.create_run(
        name="r", spec_text="", spec={}, spec_path=None,
        stages=[NewStage("b", "pretrain", 1, "a", {}), NewStage("a", "pretrain", 0, None, {})],
    )
    assert [s.name for s in store.list_stages(run_id=run.id)] == ["a", "b"]


def test_create_run_records_a_queued_event(store, make_run):
    run = make_run()
    [event] = store.events_since(run_id=run.id)
    assert (event.kind, event.data, event.stage_id) == ("RunQueued", {"name": "tiny"}, None)


def test_unique_names_get_a_suffix(store, make_run):
    names = [make_run("tiny").name for _ in range(4)]
    assert names == ["tiny", "tiny-2", "tiny-3", "tiny-4"]
    assert make_run("tiny-2").name == "tiny-2-2"
    assert make_run("tin").name == "tin"  # a prefix is another name
    assert make_run("Tiny").name == "Tiny"  # names are case-sensitive


def test_unique_name_is_not_fooled_by_like_wildcards(store, make_run):
    make_run("a_b")
    make_run("axb-2")  # `_` is a LIKE wildcard: must not count as taken for a_b
    assert make_run("a_b").name == "a_b-2"
    make_run("50%")
    assert make_run("50%").name == "50%-2"


def test_get_run_not_found(store, make_run):
    make_run()
    with pytest.raises(NotFound, match="'nope'"):
        store.get_run("nope")
    with pytest.raises(NotFound):
        store.get_run(999)
    assert issubclass(NotFound, StoreError)


def test_list_runs_newest_first_with_filters(store, make_run):
    _, b, c = make_run("a"), make_run("b"), make_run("c")
    store.update_run(b.id, status=RunStatus.RUNNING)
    store.update_run(c.id, status=RunStatus.FAILED)
    assert [r.name for r in store.list_runs()] == ["c", "b", "a"]
    assert [r.name for r in store.list_runs(limit=2)] == ["c", "b"]
    active = [s for s in RunStatus if s.is_active]
    assert [r.name for r in store.list_runs(statuses=active)] == ["b", "a"]
    assert [r.name for r in store.list_runs(statuses=[RunStatus.FAILED])] == ["c"]
    assert store.list_runs(statuses=[]) == []
    assert store.list_runs(statuses=[RunStatus.SUCCEEDED]) == []


def test_update_run_round_trip(store, make_run):
    run = make_run()
    now = datetime.now(UTC)
    store.update_run(run.id, status=RunStatus.RUNNING, started_at=now, pid=4242, host="box",
                     cancel_requested=True, error="boom", attempt=2)
    got = store.get_run(run.id)
    assert got.status is RunStatus.RUNNING
    assert (got.started_at, got.pid, got.host) == (now, 4242, "box")
    assert (got.cancel_requested, got.error, got.attempt) == (True, "boom", 2)
    assert got.spec == run.spec  # untouched fields stay
    store.update_run(run.id)  # nothing to do is not an error


def test_update_missing_run_or_stage(store):
    with pytest.raises(NotFound, match="no run with id 99"):
        store.update_run(99, pid=1)
    with pytest.raises(NotFound, match="no stage with id 99"):
        store.update_stage(99, step=1)
    with pytest.raises(NotFound):
        store.get_stage(stage_id=99)


def test_heartbeat(store, make_run):
    run = make_run()
    store.heartbeat(run.id)
    beat = store.get_run(run.id).heartbeat_at
    assert beat is not None and abs(datetime.now(UTC) - beat) < timedelta(minutes=1)


def test_set_run_status_if_is_compare_and_set(store, make_run):
    run = make_run()
    assert store.set_run_status_if(run.id, expected=[RunStatus.QUEUED], status=RunStatus.RUNNING, pid=7)
    assert store.get_run(run.id).status is RunStatus.RUNNING
    # a second claimant loses and changes nothing
    assert not store.set_run_status_if(run.id, expected=[RunStatus.QUEUED], status=RunStatus.RUNNING, pid=8)
    assert store.get_run(run.id).pid == 7
    # finishing vs. being marked crashed: only the first wins
    assert store.set_run_status_if(
        run.id, expected=[RunStatus.RUNNING], status=RunStatus.SUCCEEDED, error=None
    )
    assert not store.set_run_status_if(
        run.id, expected=[RunStatus.QUEUED, RunStatus.RUNNING], status=RunStatus.CRASHED
    )
    assert store.get_run(run.id).status is RunStatus.SUCCEEDED
    assert not store.set_run_status_if(999, expected=list(RunStatus), status=RunStatus.FAILED)


# --- stages ---------------------------------------------------------------------


def test_update_and_get_stage(store, make_run):
    run = make_run()
    [stage] = store.list_stages(run_id=run.id)
    now = datetime.now(UTC)
    store.update_stage(
        stage.id, status=StageStatus.RUNNING, step=5, total=10, device="cpu", pid=9,
        started_at=now, config={"resolved": {"lr": 1e-3}}, output_path="/out",
        error="e", traceback="Traceback...\n" * 100, attempt=1,
    )
    got = store.get_stage(stage_id=stage.id)
    assert got.status is StageStatus.RUNNING
    assert (got.step, got.total, got.device, got.pid, got.started_at) == (5, 10, "cpu", 9, now)
    assert got.config == {"resolved": {"lr": 1e-3}}
    assert (got.output_path, got.error, got.attempt) == ("/out", "e", 1)
    assert got.traceback == "Traceback...\n" * 100


def test_waiting_stages_across_runs(store, make_run):
    first = make_run("first", ("a", "b"))
    second = make_run("second", ("c",))
    a, b = store.list_stages(run_id=first.id)
    [c] = store.list_stages(run_id=second.id)
    assert store.waiting_stages() == []
    store.update_stage(c.id, status=StageStatus.WAITING)
    store.update_stage(b.id, status=StageStatus.WAITING)
    store.update_stage(a.id, status=StageStatus.RUNNING)
    waiting = store.waiting_stages()
    assert [(s.run_id, s.name) for s in waiting] == [(first.id, "b"), (second.id, "c")]
    assert all(s.status is StageStatus.WAITING for s in waiting)


def test_stage_names_are_unique_within_a_run(store):
    with pytest.raises(IntegrityError):
        store.create_run(
            name="dup", spec_text="", spec={}, spec_path=None,
            stages=[NewStage("a", "pretrain", 0, None, {}), NewStage("a", "pretrain", 1, None, {})],
        )
    assert store.list_runs() == []  # one transaction: no run without its stages


# --- metrics --------------------------------------------------------------------


def points(run_id, stage_id, key, values, *, first_step=0, wall=1000.0):
    return [
        {"run_id": run_id, "stage_id": stage_id, "key": key, "step": first_step + i,
         "value": float(v), "wall_time": wall + i}
        for i, v in enumerate(values)
    ]


@pytest.fixture
def stage(store, make_run) -> StageRead:
    run = make_run("m", ("a", "b"))
    return store.list_stages(run_id=run.id)[0]


def test_metric_series_full(store, stage):
    store.add_metrics(points(stage.run_id, stage.id, "train/loss", [3, 2, 1]))
    store.add_metrics([])  # nothing to write is fine
    series = store.metric_series(stage_id=stage.id, key="train/loss")
    assert series == [
        SeriesPoint(step=0, value=3.0, low=3.0, high=3.0, wall_time=1000.0),
        SeriesPoint(step=1, value=2.0, low=2.0, high=2.0, wall_time=1001.0),
        SeriesPoint(step=2, value=1.0, low=1.0, high=1.0, wall_time=1002.0),
    ]
    assert store.metric_series(stage_id=stage.id, key="train/loss", after_step=0) == series[1:]
    assert store.metric_series(stage_id=stage.id, key="other") == []
    assert store.last_metric_step(stage_id=stage.id) == 2


def test_a_resumed_stage_replaces_the_steps_it_runs_again(store, stage):
    store.add_metrics(points(stage.run_id, stage.id, "train/loss", [5, 4, 3, 2]))  # steps 0..3, killed after 3
    assert store.drop_metrics_after(stage_id=stage.id, step=1) == 2  # resumed from the checkpoint of step 1
    store.add_metrics([{**p, "step": p["step"] + 2} for p in points(stage.run_id, stage.id, "train/loss", [3.5, 2.5])])
    series = store.metric_series(stage_id=stage.id, key="train/loss")
    assert [(p.step, p.value) for p in series] == [(0, 5.0), (1, 4.0), (2, 3.5), (3, 2.5)]


def test_metric_series_sorted_by_step_whatever_the_write_order(store, stage):
    rows = points(stage.run_id, stage.id, "k", [1, 2, 3])
    store.add_metrics(rows[::-1])
    assert [p.step for p in store.metric_series(stage_id=stage.id, key="k")] == [0, 1, 2]


def test_metric_series_downsampled_by_hand(store, stage):
    values = [5, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # steps 0..9, wall times 1000..1009
    store.add_metrics(points(stage.run_id, stage.id, "k", values))
    # 4 buckets over steps 0..9 are 2.5 steps wide: {0,1,2} {3,4} {5,6,7} {8,9}
    series = store.metric_series(stage_id=stage.id, key="k", max_points=4)
    expected = [
        # mean step, mean value,  min, max, last wall time
        (1.0, 10 / 3, 1.0, 5.0, 1002.0),
        (3.5, 3.0, 1.0, 5.0, 1004.0),
        (6.0, 17 / 3, 2.0, 9.0, 1007.0),
        (8.5, 4.0, 3.0, 5.0, 1009.0),
    ]
    assert len(series) == 4
    for point, (step, mean, low, high, wall) in zip(series, expected):
        assert point.step == pytest.approx(step)
        assert point.value == pytest.approx(mean)
        assert (point.low, point.high, point.wall_time) == (low, high, wall)


def test_metric_series_downsampled_after_a_step(store, stage):
    store.add_metrics(points(stage.run_id, stage.id, "k", [5, 1, 4, 1, 5, 9, 2, 6, 5, 3]))
    # steps 4..9 (values 5 9 2 6 5 3) in 2 buckets of 3 steps: {4,5,6} {7,8,9}
    series = store.metric_series(stage_id=stage.id, key="k", max_points=2, after_step=3)
    assert [(p.step, p.value, p.low, p.high) for p in series] == [
        (5.0, pytest.approx(16 / 3), 2.0, 9.0),
        (8.0, pytest.approx(14 / 3), 3.0, 6.0),
    ]


def test_metric_series_not_downsampled_when_small(store, stage):
    store.add_metrics(points(stage.run_id, stage.id, "k", [1, 2, 3]))
    full = store.metric_series(stage_id=stage.id, key="k")
    assert store.metric_series(stage_id=stage.id, key="k", max_points=3) == full
    assert store.metric_series(stage_id=stage.id, key="k", max_points=1000) == full
    assert store.metric_series(stage_id=stage.id, key="none", max_points=10) == []


def test_metric_series_downsampled_large_and_gappy(store, stage):
    steps = list(range(0, 5000, 5))  # 1000 points
    store.add_metrics([
        {"run_id": stage.run_id, "stage_id": stage.id, "key": "k", "step": s, "value": float(s),
         "wall_time": float(s)}
        for s in steps
    ])
    series = store.metric_series(stage_id=stage.id, key="k", max_points=100)
    assert 0 < len(series) <= 100
    assert series[0].low == 0.0 and series[-1].high == 4995.0
    assert [p.step for p in series] == sorted(p.step for p in series)
    for p in series:
        assert p.low <= p.value <= p.high


def test_metric_series_downsampled_when_all_points_share_a_step(store, stage):
    # e.g. a stage logging several values at one step, or re-logging after a resume
    store.add_metrics([
        {"run_id": stage.run_id, "stage_id": stage.id, "key": "k", "step": 7, "value": float(v),
         "wall_time": 1.0} for v in range(10)
    ])
    series = store.metric_series(stage_id=stage.id, key="k", max_points=3)
    assert len(series) <= 3


def test_metric_series_rejects_max_points_below_one(store, stage):
    store.add_metrics(points(stage.run_id, stage.id, "k", [1, 2, 3]))
    with pytest.raises(ValueError, match="max_points"):
        store.metric_series(stage_id=stage.id, key="k", max_points=0)


def test_metrics_since_in_insertion_order(store, stage):
    other = store.list_stages(run_id=stage.run_id)[1]
    store.add_metrics(points(stage.run_id, stage.id, "a", [1, 2]))
    store.add_metrics(points(stage.run_id, other.id, "b", [3]))
    store.add_metrics(points(stage.run_id, stage.id, "a", [0], first_step=0))  # re-logged step
    got = store.metrics_since(run_id=stage.run_id)
    assert all(isinstance(m, MetricRead) for m in got)
    assert [(m.stage_id, m.key, m.step, m.value) for m in got] == [
        (stage.id, "a", 0, 1.0), (stage.id, "a", 1, 2.0), (other.id, "b", 0, 3.0), (stage.id, "a", 0, 0.0),
    ]
    assert got == sorted(got, key=lambda m: m.id)
    assert store.metrics_since(run_id=stage.run_id, after_id=got[1].id) == got[2:]
    assert store.metrics_since(run_id=stage.run_id, limit=1) == got[:1]
    assert store.metrics_since(run_id=stage.run_id, after_id=got[-1].id) == []
    assert store.metrics_since(run_id=999) == []


def test_metric_keys_and_summaries(store, stage):
    other = store.list_stages(run_id=stage.run_id)[1]
    store.add_metrics(points(stage.run_id, stage.id, "train/loss", [4, 2, 3]))
    store.add_metrics(points(stage.run_id, stage.id, "eval/loss", [9, 7], first_step=10))
    store.add_metrics(points(stage.run_id, other.id, "train/loss", [1]))
    assert store.metric_keys(run_id=stage.run_id) == [
        (stage.id, "eval/loss"), (stage.id, "train/loss"), (other.id, "train/loss"),
    ]
    assert store.metric_summaries(run_id=stage.run_id) == [
        MetricSummary(stage_id=stage.id, key="eval/loss", count=2, first=9.0, last_step=11, last=7.0,
                      low=7.0, high=9.0),
        MetricSummary(stage_id=stage.id, key="train/loss", count=3, first=4.0, last_step=2, last=3.0,
                      low=2.0, high=4.0),
        MetricSummary(stage_id=other.id, key="train/loss", count=1, first=1.0, last_step=0, last=1.0,
                      low=1.0, high=1.0),
    ]
    assert store.metric_summaries(run_id=999) == []
    assert store.last_metric_step(stage_id=other.id) == 0


def test_metrics_of_other_runs_stay_apart(store, make_run, stage):
    run2 = make_run("other")
    [stage2] = store.list_stages(run_id=run2.id)
    store.add_metrics(points(stage.run_id, stage.id, "k", [1, 2]))
    store.add_metrics(points(run2.id, stage2.id, "k", [5]))
    assert [p.value for p in store.metric_series(stage_id=stage2.id, key="k")] == [5.0]
    assert [s.count for s in store.metric_summaries(run_id=stage.run_id)] == [2]
    assert store.last_metric_step(stage_id=store.list_stages(run_id=stage.run_id)[1].id) is None


def test_infinite_values_round_trip(store, stage):
    store.add_metrics(points(stage.run_id, stage.id, "k", [float("inf"), float("-inf")]))
    assert [p.value for p in store.metric_series(stage_id=stage.id, key="k")] == [
        float("inf"), float("-inf"),
    ]


def test_foreign_keys_are_enforced(store, stage):
    with pytest.raises(IntegrityError):
        store.add_metrics(points(stage.run_id, 999, "k", [1]))
    assert store.metric_series(stage_id=999, key="k") == []


# --- logs and events ------------------------------------------------------------


def test_logs_since(store, stage):
    run_id = stage.run_id
    other = store.list_stages(run_id=run_id)[1]
    t = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.add_logs([
        {"run_id": run_id, "stage_id": stage.id, "message": "one"},
        {"run_id": run_id, "stage_id": stage.id, "message": "two", "stream": "stderr",
         "level": "warning", "time": t},
        {"run_id": run_id, "stage_id": other.id, "message": "three"},
        {"run_id": run_id, "stage_id": None, "message": "multi\nline"},
    ])
    store.add_logs([])
    lines = store.logs_since(run_id=run_id)
    assert all(isinstance(line, LogLineRead) for line in lines)
    assert [line.message for line in lines] == ["one", "two", "three", "multi\nline"]
    assert (lines[0].stream, lines[0].level) == ("log", "info")
    assert lines[0].time.tzinfo is not None
    assert (lines[1].stream, lines[1].level, lines[1].time) == ("stderr", "warning", t)
    assert [line.message for line in store.logs_since(run_id=run_id, after_id=lines[1].id)] == [
        "three", "multi\nline",
    ]
    assert [line.message for line in store.logs_since(run_id=run_id, limit=2)] == ["one", "two"]
    assert [line.message for line in store.logs_since(run_id=run_id, stage_id=other.id)] == ["three"]
    assert store.logs_since(run_id=run_id, after_id=lines[-1].id) == []
    assert store.logs_since(run_id=999) == []


def test_events_since(store, stage):
    run_id = stage.run_id
    store.add_event(run_id=run_id, kind="RunStarted", data={"pid": 1})
    store.add_event(run_id=run_id, stage_id=stage.id, kind="StageStarted")
    events = store.events_since(run_id=run_id)
    assert all(isinstance(e, EventRead) for e in events)
    assert [(e.kind, e.stage_id, e.data) for e in events] == [
        ("RunQueued", None, {"name": "m"}),
        ("RunStarted", None, {"pid": 1}),
        ("StageStarted", stage.id, {}),
    ]
    assert [e.kind for e in store.events_since(run_id=run_id, after_id=events[0].id)] == [
        "RunStarted", "StageStarted",
    ]
    assert store.events_since(run_id=run_id, after_id=events[-1].id) == []


# --- checkpoints and artifacts --------------------------------------------------


def test_checkpoints_add_list_remove(store, stage):
    run_id = stage.run_id
    other = store.list_stages(run_id=run_id)[1]
    c1 = store.add_checkpoint(run_id=run_id, stage_id=stage.id, step=100, path="/c/100")
    c2 = store.add_checkpoint(run_id=run_id, stage_id=stage.id, step=200, path="/c/200")
    final = store.add_checkpoint(run_id=run_id, stage_id=other.id, step=300, path="/f", is_final=True)
    assert isinstance(c1, CheckpointRead)
    assert (c1.step, c1.path, c1.is_final, c1.stage_id) == (100, "/c/100", False, stage.id)
    assert final.is_final and c1.created_at.tzinfo is not None
    assert store.list_checkpoints(run_id=run_id) == [c1, c2, final]
    assert store.list_checkpoints(stage_id=stage.id) == [c1, c2]
    assert store.list_checkpoints(run_id=run_id, stage_id=other.id) == [final]
    assert store.list_checkpoints(run_id=999) == []

    saved = [e for e in store.events_since(run_id=run_id) if e.kind == "CheckpointSaved"]
    assert [e.data for e in saved] == [
        {"step": 100, "path": "/c/100", "final": False},
        {"step": 200, "path": "/c/200", "final": False},
        {"step": 300, "path": "/f", "final": True},
    ]

    store.remove_checkpoints([c1.id])
    store.remove_checkpoints([])
    store.remove_checkpoints([12345])  # already gone: nothing to do
    assert store.list_checkpoints(run_id=run_id) == [c2, final]


def test_artifacts(store, stage):
    run_id = stage.run_id
    tok = store.add_artifact(kind="tokenizer", name="bpe-4k", path="/cache/bpe-4k",
                             meta={"vocab_size": 4096})
    data = store.add_artifact(kind="dataset", name="corpus", path="/d", run_id=run_id,
                              stage_id=stage.id)
    samples = store.add_artifact(kind="samples", name="s", path="/s.jsonl", run_id=run_id)
    assert isinstance(tok, ArtifactRead)
    assert (tok.run_id, tok.stage_id, tok.meta) == (None, None, {"vocab_size": 4096})
    assert (data.run_id, data.stage_id, data.meta) == (run_id, stage.id, {})
    assert store.list_artifacts() == [tok, data, samples]
    assert store.list_artifacts(run_id=run_id) == [data, samples]
    assert store.list_artifacts(kind="tokenizer") == [tok]
    assert store.list_artifacts(run_id=run_id, kind="samples") == [samples]


# --- read models ----------------------------------------------------------------


def test_read_models_are_detached(workspace, make_run):
    store = workspace.store
    run = make_run("r", ("a", "b"))
    [stage, _] = store.list_stages(run_id=run.id)
    store.add_metrics(points(run.id, stage.id, "k", [1]))
    store.add_logs([{"run_id": run.id, "stage_id": stage.id, "message": "hi"}])
    checkpoint = store.add_checkpoint(run_id=run.id, stage_id=stage.id, step=1, path="/c")
    artifact = store.add_artifact(kind="samples", name="s", path="/s", run_id=run.id)
    got = store.get_run(run.id)
    runs = store.list_runs()
    logs = store.logs_since(run_id=run.id)
    events = store.events_since(run_id=run.id)
    workspace.close()
    # every field still reads after the store is closed: nothing is lazy
    for model in [got, *runs, stage, checkpoint, artifact, *logs, *events]:
        for name in type(model).model_fields:
            getattr(model, name)
        assert not hasattr(model, "_sa_instance_state"), type(model)
    assert got.spec == run.spec and logs[0].message == "hi"
