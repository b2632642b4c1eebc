"""The console's Textual-free parts: reads, incremental series, diffs, forms, system info."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from console.forms import Template, build_spec, form_fields, kind_template, spec_text
from console.sysinfo import LocalSampler, human_bytes, parse_nvidia_smi
from console.view_models import (
    MISSING,
    KeySeries,
    RunModel,
    RunsModel,
    chart_groups,
    config_diff,
    duration,
    load_samples,
    regrid,
    spark_values,
)
from console.widgets.cells import bar, sparkline
from console.widgets.chart import compact_number, ema
from engine import SpecError
from store import NewStage, RunStatus, SeriesPoint

from .conftest import NOW, fixed_clock


def _stage(store):
    run = store.create_run(name="r", spec_text="", spec={}, spec_path=None,
                           stages=[NewStage(name="s", kind="fake", position=0, parent=None, config={})])
    return run.id, store.list_stages(run_id=run.id)[0].id


def _points(run_id: int, stage_id: int, key: str, steps: range, value=lambda s: 1.0 / s):
    return [dict(run_id=run_id, stage_id=stage_id, key=key, step=s, value=value(s), wall_time=1000.0 + s)
            for s in steps]


def test_stage_metric_keys_lists_each_key_once(store) -> None:
    run_id, stage_id = _stage(store)
    assert store.stage_metric_keys(stage_id=stage_id) == []
    store.add_metrics(_points(run_id, stage_id, "train/loss", range(1, 500))
                      + _points(run_id, stage_id, "eval/loss", range(10, 500, 10)))
    assert store.stage_metric_keys(stage_id=stage_id) == ["eval/loss", "train/loss"]


def test_a_series_is_downsampled_once_then_read_incrementally(store) -> None:
    run_id, stage_id = _stage(store)
    store.add_metrics(_points(run_id, stage_id, "k", range(1, 10_001)))
    series = KeySeries(stage_id, "s", "k", capacity=100)

    assert series.read(store)
    assert len(series.points) <= 100
    assert (series.last_step, series.last) == (10_000, pytest.approx(1e-4))
    assert (series.low, series.high) == (pytest.approx(1e-4), pytest.approx(1.0))

    assert not series.read(store)  # nothing new: nothing read
    store.add_metrics(_points(run_id, stage_id, "k", range(10_001, 10_011), value=lambda s: 5.0))
    before = len(series.points)
    assert series.read(store)
    assert len(series.points) == before + 10  # only the new points, raw
    assert (series.last_step, series.last, series.high) == (10_010, 5.0, 5.0)


def test_a_series_stays_bounded_however_long_a_run_logs(store) -> None:
    run_id, stage_id = _stage(store)
    series = KeySeries(stage_id, "s", "k", capacity=20)
    for start in range(1, 2001, 50):
        store.add_metrics(_points(run_id, stage_id, "k", range(start, start + 50)))
        series.read(store)
    assert len(series.points) <= 40
    assert series.points[0].step < 100 and series.points[-1].step > 1900
    gaps = [b.step - a.step for a, b in zip(series.points, series.points[1:])]
    assert max(gaps) < 4 * 2000 / 20  # old points are not squeezed into a few
    assert series.last_step == 2000


def test_regrid_buckets_evenly_and_keeps_extremes() -> None:
    points = [SeriesPoint(step=i, value=i, low=i - 1, high=i + 1, wall_time=i) for i in range(10)]
    merged, spans = regrid(points, [1.0] * 10, 5)
    assert [p.step for p in merged] == [0.5, 2.5, 4.5, 6.5, 8.5] and spans == [2.0] * 5
    assert merged[0].low == -1 and merged[-1].high == 10
    # a point standing for many steps weighs more than a raw one
    heavy, _ = regrid([SeriesPoint(0, 0, 0, 0, 0), SeriesPoint(1, 10, 10, 10, 1), SeriesPoint(9, 0, 0, 0, 9)],
                      [3.0, 1.0, 1.0], 2)
    assert heavy[0].value == pytest.approx(2.5)


def test_runs_model_reads_every_run_once_finished(fixture_engine, fixture_ws) -> None:
    import asyncio

    model = RunsModel(fixture_engine, clock=fixed_clock)
    rows = {r.name: r for r in asyncio.run(model.refresh())}
    assert {n: r.status for n, r in rows.items()} == {
        "baseline": RunStatus.SUCCEEDED, "lr-high": RunStatus.FAILED, "box-reboot": RunStatus.CRASHED,
        "stopped-early": RunStatus.CANCELLED, "literal": RunStatus.FAILED, "two-stage": RunStatus.RUNNING,
        "waiting-turn": RunStatus.QUEUED,
    }
    running = rows["two-stage"]
    assert (running.stage, running.step, running.total, running.stage_position) == ("more", 150, 400, 2)
    assert running.eta_seconds == pytest.approx(500, rel=0.05)  # 250 steps left at 2 s per step
    assert running.metric_key == "train/loss" and len(running.spark) > 5
    assert rows["baseline"].progress == 1.0 and rows["baseline"].eta_seconds is None
    assert rows["waiting-turn"].metric_key is None and rows["waiting-turn"].spark == ()


def test_run_model_refresh_reads_only_what_is_new(fixture_engine, fixture_ws) -> None:
    import asyncio

    model = RunModel(fixture_engine, fixture_ws.ids["two-stage"], capacity=64)
    first = asyncio.run(model.refresh())
    assert first.keys_added and len(first.logs) == 2
    labels = [g.label for g in model.groups()]
    assert labels[0] == "pretrain: loss" and "more: loss" in labels
    loss = next(g for g in model.groups() if g.label == "more: loss")
    assert [key for _, key in loss.keys] == ["train/loss", "eval/loss"]  # train and eval together

    assert first.samples_changed
    assert [g.label for g in model.sample_groups] == ["more · step 150", "more · step 100", "more · step 50"]
    assert [s.response for s in load_samples(fixture_engine.store, model.sample_groups[0])] == [
        "hello at step 150", "one two three"]

    second = asyncio.run(model.refresh())
    assert not second.keys_added and not second.logs and not second.metrics_changed
    assert not second.samples_changed

    run_id = fixture_ws.ids["two-stage"]
    stage_id = next(s.id for s in first.detail.stages if s.name == "more")
    fixture_engine.store.add_metrics(_points(run_id, stage_id, "train/loss", range(151, 154))
                                     + _points(run_id, stage_id, "train/kl", range(151, 154)))
    fixture_engine.store.add_logs([dict(run_id=run_id, stage_id=stage_id, message="step 153")])
    [prompt] = fixture_engine.store.add_prompts([{"text": "Say hello."}])
    fixture_engine.store.add_samples([{"prompt_id": prompt, "response": "hi", "run_id": run_id,
                                       "stage_id": stage_id, "step": 153}])
    third = asyncio.run(model.refresh())
    assert third.samples_changed and model.sample_groups[0].label == "more · step 153"
    assert (stage_id, "train/loss") in third.metrics_changed and third.keys_added
    assert [row.message for row in third.logs] == ["step 153"]
    assert model.series[(stage_id, "train/loss")].last_step == 153


def test_run_model_reads_a_finished_stage_a_few_times_then_stops(fixture_engine, fixture_ws) -> None:
    import asyncio

    model = RunModel(fixture_engine, fixture_ws.ids["baseline"])
    reads = []
    original = fixture_engine.store.stage_metric_keys

    def counting(**kwargs):
        reads.append(kwargs)
        return original(**kwargs)

    fixture_engine.store.stage_metric_keys = counting  # type: ignore[method-assign]
    for _ in range(6):
        asyncio.run(model.refresh())
    assert 1 <= len(reads) <= 3


def test_chart_groups_put_loss_first_per_stage() -> None:
    groups = chart_groups([(1, "pretrain", "train/lr"), (1, "pretrain", "eval/loss"), (1, "pretrain", "train/loss"),
                           (1, "pretrain", "ppo/kl")])
    assert [g.label for g in groups] == ["loss", "ppo/kl", "train/lr"]
    assert groups[0].keys == ((1, "train/loss"), (1, "eval/loss"))


def test_config_diff_shows_only_keys_that_differ() -> None:
    a = {"description": "x", "stages": {"p": {"kind": "pretrain", "lr": 1e-3, "steps": 10}}}
    b = {"description": "x", "stages": {"p": {"kind": "pretrain", "lr": 2e-3, "steps": 10},
                                        "q": {"kind": "sft"}}}
    assert config_diff([a, b]) == [("p.lr", [1e-3, 2e-3]), ("[q]", [MISSING, "kind = sft"])]
    assert config_diff([a, a]) == []


def test_formatting_helpers() -> None:
    assert [duration(s) for s in (5, 303, 3900, 180000, None)] == ["5s", "5m03s", "1h05m", "2d02h", "-"]
    assert sparkline([1, 2, 3, 4], 6) == "  ▁▃▆█"
    assert sparkline([2, 2], 3) == " ▄▄" and sparkline([], 2) == "  "
    assert bar(0.5, 4) == "██  " and bar(1.0, 3) == "███" and bar(None, 2) == "  "
    assert spark_values([SeriesPoint(i, i, i, i, i) for i in range(100)], 10)[0] == pytest.approx(4.5)
    assert [compact_number(x) for x in (0, 7, 950, 12_500, 1_200_000)] == ["0", "7", "950", "12.5k", "1.2M"]
    smoothed = ema([1.0, 1.0, 3.0], 0.5)
    assert smoothed[0] == 1.0 and 1.0 < smoothed[2] < 3.0 and math.isnan(ema([math.nan], 0.5)[0])


def test_a_template_becomes_a_validated_spec(tmp_path: Path) -> None:
    template = Template("fake", "fake", kind_template("fake"))
    fields = {f.id: f for f in form_fields(template)}
    assert fields["name"].value == "my-fake"
    assert fields["fake.steps"].type == "int" and fields["fake.steps"].value == "10"

    spec = build_spec(template, {"name": "tuned", "fake.steps": "25"}, base_dir=tmp_path)
    assert spec.name == "tuned" and spec.stages["fake"].steps == 25
    assert 'steps = 25' in spec_text(template, {"fake.steps": "25"})

    with pytest.raises(SpecError) as error:
        build_spec(template, {"fake.steps": "many"}, base_dir=tmp_path)
    assert "'fake'" in str(error.value) and "'steps'" in str(error.value) and "integer" in str(error.value)


def test_nvidia_smi_output_is_parsed() -> None:
    gpus = parse_nvidia_smi("0, NVIDIA A100-SXM4-80GB, 87, 40000, 81920\n1, Tesla T4, [N/A], 10, 15360\n")
    assert [(g.index, g.name, g.utilization) for g in gpus] == [(0, "NVIDIA A100-SXM4-80GB", 87.0),
                                                                (1, "Tesla T4", None)]
    assert gpus[0].memory_total == 81920 * 1024 * 1024


def test_the_local_sampler_reads_this_machine() -> None:
    snapshot = LocalSampler().sample()
    assert snapshot.cpu_count >= 1 and 0 <= snapshot.cpu_percent <= 100
    assert 0 < snapshot.memory_used <= snapshot.memory_total
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(3 * 1024**3) == "3.0 GiB"


def test_fixture_clock_is_fixed() -> None:
    assert fixed_clock() == NOW
