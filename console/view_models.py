"""What the console reads, as plain objects: Textual-free, testable without a screen.

The console reads the store through its read API (`engine.reads`, typed as
`store.reads.StoreReader`; the runs list through `Engine.list_run_listings`
and `store.reads.list_stages`, without the ORM) and acts only through the
engine. Every read here is a cheap indexed query run off the event loop, and
each refresh asks only for what is new since the last one:

- metric series are downsampled by bucket in SQL on their first read
  (`Store.metric_series(max_points=...)`), then extended with the points
  logged after the last step read, so refreshing a run with a million points
  costs what refreshing one with a thousand costs;
- log lines are read after the last id seen;
- finished runs are not read again until their status or attempt changes.

Models are used from one task at a time (the screen that owns them), their
`*_sync` methods in a worker thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from store import RunStatus, StageStatus, reads, utcnow

if TYPE_CHECKING:
    from engine import Engine, RunDetail
    from store import LogLineRead, RunRead, SampleView, SeriesPoint, StageRead
    from store.reads import RunListing, StageListing, StoreReader

    #: a stage as the runs list reads it (plain sqlite3) or as a run's screen does (the ORM)
    StageLike = StageRead | StageListing

#: either kind of stage: current_stage gives back the kind it was given
AnyStage = TypeVar("AnyStage", bound="StageLike")

Clock = Callable[[], datetime]

#: metrics a run's sparkline prefers, in order; else the stage's first key
MAIN_KEYS = ("train/loss", "train/reward", "train/rewards/mean", "eval/loss")
SPARK_POINTS = 24
LOG_PAGE = 2000
LOG_PAGES_PER_REFRESH = 5
#: refreshes that still read a stage after it changed state (its last writes are batched)
SETTLE_REFRESHES = 3
#: samples shown at once for one step or batch
SAMPLES_SHOWN = 200
#: per-point budget of a chart: 2 braille dots per terminal column
DEFAULT_CAPACITY = 160


def chart_capacity(plot_columns: int) -> int:
    """Points to read for a chart this wide: 2 per column, in steps of x2 from
    DEFAULT_CAPACITY, so small resizes never read a series again."""
    capacity = DEFAULT_CAPACITY
    while capacity < 2 * plot_columns:
        capacity *= 2
    return capacity


# --- words and symbols ---------------------------------------------------------

#: one symbol per status, so status reads without colour (NO_COLOR, 16 colours)
STATUS_SYMBOLS = {
    "queued": "◌", "waiting": "◌", "pending": "○", "running": "●",
    "succeeded": "✓", "failed": "✗", "cancelled": "⊘", "crashed": "!",
}
STATUS_STYLES = {
    "queued": "dim", "waiting": "yellow", "pending": "dim", "running": "bold cyan",
    "succeeded": "green", "failed": "bold red", "cancelled": "yellow", "crashed": "bold red",
}


def status_label(status: str) -> str:
    return f"{STATUS_SYMBOLS.get(str(status), '?')} {status}"


def duration(seconds: float | None) -> str:
    """42 -> '42s', 303 -> '5m03s', 3900 -> '1h05m', 180000 -> '2d02h'."""
    if seconds is None or seconds != seconds or seconds == math.inf:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{max(0, seconds):.0f}s ago"


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    if value in (math.inf, -math.inf):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def first_line(text: str | None) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


# --- series -------------------------------------------------------------------------


def regrid(
    points: Sequence[SeriesPoint], spans: Sequence[float], buckets: int
) -> tuple[list[SeriesPoint], list[float]]:
    """Points re-bucketed onto `buckets` equal step ranges over their whole range.

    `spans` are how many logged steps each point stands for, so a bucket's
    mean weighs a downsampled point more than a raw one; min and max stay exact."""
    if len(points) <= buckets:
        return list(points), list(spans)
    from store import SeriesPoint  # the ORM's module: loaded by the reads that made `points`

    lo, hi = points[0].step, points[-1].step
    width = (hi - lo) / buckets or 1.0
    sums: dict[int, list[float]] = {}
    for point, span in zip(points, spans):
        index = min(buckets - 1, int((point.step - lo) / width))
        acc = sums.get(index)
        if acc is None:
            sums[index] = [point.step * span, point.value * span, point.low, point.high, point.wall_time, span]
        else:
            acc[0] += point.step * span
            acc[1] += point.value * span
            acc[2] = min(acc[2], point.low)
            acc[3] = max(acc[3], point.high)
            acc[4] = max(acc[4], point.wall_time)
            acc[5] += span
    merged, weights = [], []
    for index in sorted(sums):
        step, value, low, high, wall, span = sums[index]
        merged.append(SeriesPoint(step=step / span, value=value / span, low=low, high=high, wall_time=wall))
        weights.append(span)
    return merged, weights


@dataclass
class KeySeries:
    """One metric key of one stage: its chart points (at most 2 x capacity),
    its latest, min and max, and the last step read."""

    stage_id: int
    stage: str
    key: str
    capacity: int = DEFAULT_CAPACITY
    points: list[SeriesPoint] = field(default_factory=list)
    spans: list[float] = field(default_factory=list)  # logged steps each point stands for
    last_step: int | None = None  # exact: the next read asks for steps after it
    last: float | None = None
    low: float | None = None
    high: float | None = None

    def read(self, store: StoreReader) -> bool:
        """Read what was logged since the last read (everything, downsampled, the
        first time); True if there was anything new."""
        new = store.metric_series(
            stage_id=self.stage_id, key=self.key, max_points=self.capacity, after_step=self.last_step,
        )
        if not new:
            return False
        # Bucket means hide the newest step and value: read the raw tail of the last bucket.
        tail = store.metric_series(stage_id=self.stage_id, key=self.key, after_step=math.floor(new[-1].step) - 1)
        span = 1.0
        if len(new) > 1 and (new[-1].step - new[0].step) > len(new) - 1:
            span = (new[-1].step - new[0].step) / (len(new) - 1)  # downsampled: each bucket covers this many
        self.points.extend(new)
        self.spans.extend([span] * len(new))
        if len(self.points) > 2 * self.capacity:
            self.points, self.spans = regrid(self.points, self.spans, self.capacity)
        lows = [p.low for p in new]
        highs = [p.high for p in new]
        self.low = min(lows) if self.low is None else min(self.low, *lows)
        self.high = max(highs) if self.high is None else max(self.high, *highs)
        if tail:
            self.last_step, self.last = int(tail[-1].step), tail[-1].value
        else:  # pragma: no cover - the tail always holds the last point read
            self.last_step, self.last = int(new[-1].step), new[-1].value
        return True

    def reset(self, capacity: int | None = None) -> None:
        if capacity is not None:
            self.capacity = capacity
        self.points, self.spans, self.last_step, self.last, self.low, self.high = [], [], None, None, None, None


def spark_values(points: Sequence[SeriesPoint], width: int) -> list[float]:
    """A series resampled to `width` values (bucket means), for a sparkline."""
    values = [p.value for p in points if math.isfinite(p.value)]
    if len(values) <= width:
        return values
    size = len(values) / width
    return [
        sum(chunk) / len(chunk)
        for i in range(width)
        if (chunk := values[int(i * size): max(int((i + 1) * size), int(i * size) + 1)])
    ]


def recent_rate(points: Sequence[SeriesPoint]) -> float | None:
    """Steps per second over the newest half of a series (robust to resumes)."""
    if len(points) < 2:
        return None
    recent = points[len(points) // 2:] if len(points) >= 4 else points
    steps = recent[-1].step - recent[0].step
    seconds = recent[-1].wall_time - recent[0].wall_time
    if steps <= 0 or seconds <= 0:
        return None
    return steps / seconds


# --- the runs list ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One line of the runs list."""

    id: int
    name: str
    status: RunStatus
    attempt: int
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    stage: str | None  # the stage running now, else the last one reached
    stage_status: StageStatus | None
    step: int
    total: int | None
    stage_count: int
    stage_position: int
    eta_seconds: float | None
    metric_key: str | None
    spark: tuple[float, ...]
    last_value: float | None

    @property
    def progress(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.step / self.total)

    def matches(self, text: str) -> bool:
        """The runs filter: every word must appear in id, name, status or stage."""
        haystack = f"{self.id} {self.name} {self.status.value} {self.stage or ''}".lower()
        return all(word in haystack for word in text.lower().split())


def current_stage(stages: Sequence[AnyStage]) -> AnyStage | None:
    """The stage running (or waiting) now, else the last one that started."""
    for stage in stages:
        if stage.status in (StageStatus.RUNNING, StageStatus.WAITING):
            return stage
    reached = [s for s in stages if s.status != StageStatus.PENDING]
    if reached:
        return reached[-1]
    return stages[0] if stages else None


def main_key(keys: Sequence[str]) -> str | None:
    for key in MAIN_KEYS:
        if key in keys:
            return key
    return keys[0] if keys else None


def stage_eta(stage: StageLike | None, points: Sequence[SeriesPoint], now: datetime) -> float | None:
    """Seconds left in a running stage: from its recent metric rate, else its
    average rate since it started."""
    if stage is None or stage.status != StageStatus.RUNNING or not stage.total or stage.step <= 0:
        return None
    left = max(0, stage.total - stage.step)
    rate = recent_rate(points)
    if rate is None and stage.started_at is not None:
        elapsed = (now - stage.started_at).total_seconds()
        rate = stage.step / elapsed if elapsed > 0 else None
    return left / rate if rate else None


class RunsModel:
    """The runs list, refreshed incrementally: finished runs are read once."""

    def __init__(self, engine: Engine, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.rows: list[RunRow] = []
        self._stages: dict[int, tuple[tuple[str, int], list[StageListing]]] = {}
        self._spark: dict[int, KeySeries] = {}

    async def refresh(self, *, trends: bool = True) -> list[RunRow]:
        """Every run's row; without `trends` no metric is read (a first screen
        that shows the runs at once, their sparklines a moment later). Runs and
        stages are read without the ORM (store.reads); only the sparklines need it."""
        runs = await self.engine.list_run_listings()
        self.rows = await asyncio.to_thread(self._rows, runs, trends)
        return self.rows

    def _rows(self, runs: Sequence[RunListing], trends: bool = True) -> list[RunRow]:
        now = self.clock()
        signatures = {run.id: (run.status.value, run.attempt) for run in runs}
        stale = [
            run.id for run in runs
            if (cached := self._stages.get(run.id)) is None or cached[0] != signatures[run.id] or run.status.is_active
        ]
        for run_id, stages in reads.list_stages(self.engine.workspace.db_path, run_ids=stale).items():
            self._stages[run_id] = (signatures[run_id], stages)
        store = self.engine.reads if trends else None  # the ORM only once the runs are on screen
        rows = []
        for run in runs:
            fresh = run.id in stale
            stages = self._stages[run.id][1]
            stage = current_stage(stages)
            series = self._spark_series(store, run.id, stage, fresh) if store is not None else self._spark.get(run.id)
            points = series.points if series else []
            rows.append(RunRow(
                id=run.id, name=run.name, status=run.status, attempt=run.attempt,
                created_at=run.created_at, finished_at=run.finished_at, error=run.error,
                stage=stage.name if stage else None, stage_status=stage.status if stage else None,
                step=stage.step if stage else 0, total=stage.total if stage else None,
                stage_count=len(stages), stage_position=(stage.position + 1) if stage else 0,
                eta_seconds=stage_eta(stage, points, now) if run.status.is_active else None,
                metric_key=series.key if series else None,
                spark=tuple(spark_values(points, SPARK_POINTS // 2)),
                last_value=series.last if series else None,
            ))
        known = {run.id for run in runs}
        for gone in set(self._stages) - known:
            self._stages.pop(gone, None)
            self._spark.pop(gone, None)
        return rows

    def _spark_series(self, store: StoreReader, run_id: int, stage: StageLike | None, fresh: bool) -> KeySeries | None:
        series = self._spark.get(run_id)
        if stage is None:
            return None
        if series is None or series.stage_id != stage.id:
            key = main_key(store.stage_metric_keys(stage_id=stage.id))
            if key is None:
                self._spark.pop(run_id, None)
                return None
            series = KeySeries(stage.id, stage.name, key, capacity=SPARK_POINTS)
            self._spark[run_id] = series
            series.read(store)
        elif fresh:
            series.read(store)
        return series


# --- one run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRow:
    id: int
    stage: str | None
    stream: str
    level: str
    message: str
    time: datetime


@dataclass(frozen=True)
class ChartGroup:
    """Keys drawn together: `train/loss` and `eval/loss` of one stage are `loss`."""

    id: str
    label: str
    keys: tuple[tuple[int, str], ...]  # (stage_id, key)


_GROUP_ORDER = ("loss", "reward", "kl", "accuracy", "perplexity")


def chart_groups(keys: Iterable[tuple[int, str, str]]) -> list[ChartGroup]:
    """Group (stage_id, stage, key) by stage and the key's last part."""
    grouped: dict[tuple[int, str, str], list[tuple[int, str]]] = {}
    for stage_id, stage, key in keys:
        suffix = key.rsplit("/", 1)[-1]
        grouped.setdefault((stage_id, stage, suffix), []).append((stage_id, key))
    several_stages = len({stage_id for stage_id, _, _ in grouped}) > 1

    def order(item: tuple[tuple[int, str, str], list[tuple[int, str]]]) -> tuple[int, int, str]:
        (stage_id, _, suffix), _ = item
        rank = next((i for i, word in enumerate(_GROUP_ORDER) if word in suffix), len(_GROUP_ORDER))
        return (stage_id, rank, suffix)

    groups = []
    for (stage_id, stage, suffix), members in sorted(grouped.items(), key=order):
        members.sort(key=lambda m: (not m[1].startswith("train/"), m[1]))
        # One key alone is named in full (eval/perplexity); a group by what its keys share (loss).
        label = suffix if len(members) > 1 else members[0][1]
        if several_stages:
            label = f"{stage}: {label}"
        groups.append(ChartGroup(id=f"{stage_id}:{suffix}", label=label, keys=tuple(members)))
    return groups


@dataclass(frozen=True)
class SampleGroup:
    """Samples shown together: those a stage took at one training step, or one batch."""

    id: str
    label: str
    stage_id: int | None = None
    step: int | None = None
    batch_id: int | None = None


def load_samples(store: StoreReader, group: SampleGroup, limit: int = SAMPLES_SHOWN) -> list[SampleView]:
    if group.batch_id is not None:
        samples = store.list_samples(batch_id=group.batch_id, limit=limit)
    else:
        samples = store.list_samples(stage_id=group.stage_id, step=group.step, limit=limit)
    return with_rewards(store, samples)


def with_rewards(store: StoreReader, samples: list[SampleView]) -> list[SampleView]:
    """Reward models' scores (`rlhf score`) beside each sample's notes: `reward`
    when one model scored the shown samples, `reward NAME` for each of several,
    NAME being the end of the model's path (`00003/reward` for .../runs/00003/reward/final)."""
    scores = store.scores.scores_for([s.id for s in samples])
    if not scores:
        return samples
    scorers = sorted({s.scorer for s in scores})
    names = {scorer: "reward" if len(scorers) == 1 else f"reward {_scorer_name(scorer)}" for scorer in scorers}
    by_sample: dict[int, dict[str, float]] = {}
    for score in scores:
        by_sample.setdefault(score.sample_id, {})[names[score.scorer]] = score.value
    return [replace(s, meta={**s.meta, **by_sample[s.id]}) if s.id in by_sample else s for s in samples]


def _scorer_name(scorer: str) -> str:
    parts = [part for part in scorer.rstrip("/").split("/") if part]
    if len(parts) >= 3 and parts[-1] == "final":
        return "/".join(parts[-3:-1])  # a stage's output: run number and stage name
    return "/".join(parts[-2:]) or scorer


@dataclass
class RunChanges:
    """What one refresh of a run found."""

    detail: RunDetail
    logs: list[LogRow] = field(default_factory=list)
    keys_added: bool = False
    metrics_changed: set[tuple[int, str]] = field(default_factory=set)
    samples_changed: bool = False  # new steps or batches with samples
    reloaded: bool = False  # a resume: everything was read again


class RunModel:
    """One run: detail, metric keys with their series and summaries, and the log."""

    def __init__(self, engine: Engine, run: int | str, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.engine = engine
        self.ref = run
        self.capacity = capacity
        self.detail: RunDetail | None = None
        self.series: dict[tuple[int, str], KeySeries] = {}
        self.sample_groups: list[SampleGroup] = []
        self._sample_steps: dict[int, list[int]] = {}
        self.log_cursor = 0
        self._stage_state: dict[int, tuple[str, int, int | None]] = {}
        self._settle: dict[int, int] = {}
        self._run_state: tuple[str, int] | None = None
        self._attempt: int | None = None

    @property
    def run(self) -> RunRead:
        assert self.detail is not None
        return self.detail.run

    async def refresh(self) -> RunChanges:
        detail = await self.engine.detail(self.ref)
        return await asyncio.to_thread(self.refresh_sync, detail)

    def refresh_sync(self, detail: RunDetail) -> RunChanges:
        store = self.engine.reads
        changes = RunChanges(detail=detail)
        if self._attempt is not None and detail.run.attempt != self._attempt:
            # Resumed: stages restart at a checkpoint and may log steps again.
            self.series.clear()
            self._stage_state.clear()
            self._settle.clear()
            self._sample_steps.clear()
            changes.reloaded = True
        self._attempt = detail.run.attempt
        self.detail = detail
        names = {s.id: s.name for s in detail.stages}
        read_any = False
        run_state = (detail.run.status.value, detail.run.attempt)
        run_changed = run_state != self._run_state
        self._run_state = run_state
        for stage in detail.stages:
            # Read a stage while it runs, and for a few refreshes after it (or
            # its run) changed state, to catch the stage's last batched writes.
            state = (stage.status.value, stage.step, stage.total)
            if state != self._stage_state.get(stage.id) or run_changed:
                self._settle[stage.id] = SETTLE_REFRESHES
            self._stage_state[stage.id] = state
            if stage.status != StageStatus.RUNNING:
                if self._settle.get(stage.id, 0) <= 0:
                    continue
                self._settle[stage.id] -= 1
            read_any = True
            self._sample_steps[stage.id] = store.sample_steps(stage_id=stage.id)
            for key in store.stage_metric_keys(stage_id=stage.id):
                if (stage.id, key) not in self.series:
                    self.series[(stage.id, key)] = KeySeries(stage.id, names[stage.id], key, self.capacity)
                    changes.keys_added = True
            for (stage_id, key), series in self.series.items():
                if stage_id == stage.id and series.read(store):
                    changes.metrics_changed.add((stage_id, key))
        if read_any:
            groups = self._sample_groups(store, detail)
            if groups != self.sample_groups:
                self.sample_groups = groups
                changes.samples_changed = True
        for _ in range(LOG_PAGES_PER_REFRESH):
            lines = store.logs_since(run_id=detail.run.id, after_id=self.log_cursor, limit=LOG_PAGE)
            changes.logs.extend(_log_row(line, names) for line in lines)
            if lines:
                self.log_cursor = lines[-1].id
            if len(lines) < LOG_PAGE:
                break
        return changes

    def _sample_groups(self, store: StoreReader, detail: RunDetail) -> list[SampleGroup]:
        """Newest first: each stage's sampled steps, then the run's batches."""
        names = {s.id: s.name for s in detail.stages}
        groups = [
            SampleGroup(id=f"step:{stage.id}:{step}", label=f"{stage.name} · step {step}", stage_id=stage.id,
                        step=step)
            for stage in reversed(detail.stages) for step in reversed(self._sample_steps.get(stage.id, []))
        ]
        for batch in reversed(store.list_sample_batches(run_id=detail.run.id)):
            stage = names.get(batch.stage_id) if batch.stage_id else None
            groups.append(SampleGroup(id=f"batch:{batch.id}", label=f"{stage or 'run'} · {batch.name}",
                                      stage_id=batch.stage_id, batch_id=batch.id))
        return groups

    def groups(self) -> list[ChartGroup]:
        return chart_groups((s.stage_id, s.stage, s.key) for s in self.series.values())

    def group_series(self, group: ChartGroup) -> list[KeySeries]:
        return [self.series[k] for k in group.keys if k in self.series]

    def reload_sync(self, keys: Iterable[tuple[int, str]], capacity: int) -> None:
        """Read keys again at a new resolution (the chart grew)."""
        store = self.engine.reads
        self.capacity = max(self.capacity, capacity)
        for k in keys:
            series = self.series.get(k)
            if series is not None:
                series.reset(capacity)
                series.read(store)


def _log_row(line: LogLineRead, stage_names: Mapping[int, str]) -> LogRow:
    return LogRow(
        id=line.id, stage=stage_names.get(line.stage_id) if line.stage_id else None,
        stream=line.stream, level=line.level, message=line.message, time=line.time,
    )


# --- comparing runs ----------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


MISSING = object()


def _differ(values: Sequence[Any]) -> bool:
    first = values[0]
    return any((v is MISSING) != (first is MISSING) or v != first for v in values[1:])


def config_diff(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The config keys whose values differ between runs' specs, as
    (`stage.key`, one value per run) rows; MISSING where a run lacks the key.
    A stage that only some runs have is one row (`[stage]`), not one per key."""
    rows: list[tuple[str, list[Any]]] = []
    descriptions = [spec.get("description", MISSING) for spec in specs]
    if _differ(descriptions):
        rows.append(("description", descriptions))
    tables = [spec.get("stages") or {} for spec in specs]
    stage_names = list(dict.fromkeys(name for table in tables for name in table))
    for stage in stage_names:
        if not all(stage in table for table in tables):
            kinds = [f"kind = {table[stage].get('kind')}" if stage in table else MISSING for table in tables]
            rows.append((f"[{stage}]", kinds))
            continue
        flat = [flatten(table[stage]) for table in tables]
        for key in sorted({k for config in flat for k in config}):
            values = [config.get(key, MISSING) for config in flat]
            if _differ(values):
                rows.append((f"{stage}.{key}", values))
    return rows


def config_text(value: Any) -> str:
    """A config value as TOML-ish text."""
    if value is MISSING:
        return "(not set)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) else str(value)


class CompareModel:
    """Marked runs side by side: one metric overlaid, and their config diff."""

    def __init__(self, engine: Engine, run_ids: Sequence[int], *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.engine = engine
        self.run_ids = list(run_ids)
        self.capacity = capacity
        self.details: dict[int, RunDetail] = {}
        self.keys: dict[int, dict[tuple[str, str], int]] = {}  # run -> (stage, key) -> stage_id
        self.series: dict[tuple[int, str, str], KeySeries] = {}

    async def refresh(self, metric: tuple[str, str] | None) -> None:
        details = {}
        for run_id in self.run_ids:
            details[run_id] = await self.engine.detail(run_id)
        await asyncio.to_thread(self.refresh_sync, details, metric)

    def refresh_sync(self, details: Mapping[int, RunDetail], metric: tuple[str, str] | None) -> None:
        store = self.engine.reads
        for run_id, detail in details.items():
            before = self.details.get(run_id)
            if before is not None and before.run.attempt != detail.run.attempt:
                for k in [k for k in self.series if k[0] == run_id]:
                    del self.series[k]
            self.details[run_id] = detail
            if before is None or detail.run.status.is_active or before.run.status != detail.run.status:
                keys = self.keys.setdefault(run_id, {})
                for stage in detail.stages:
                    for key in store.stage_metric_keys(stage_id=stage.id):
                        keys[(stage.name, key)] = stage.id
            if metric is None or metric not in self.keys.get(run_id, {}):
                continue
            series = self.series.get((run_id, *metric))
            if series is None:
                series = KeySeries(self.keys[run_id][metric], metric[0], metric[1], self.capacity)
                self.series[(run_id, *metric)] = series
                series.read(store)
            elif detail.run.status.is_active or before is None or before.run.status != detail.run.status:
                series.read(store)

    def metrics(self) -> list[tuple[str, str]]:
        """(stage, key) pairs any marked run logged: those most runs share
        first, the main loss first among equals."""
        counts: dict[tuple[str, str], int] = {}
        for keys in self.keys.values():
            for k in keys:
                counts[k] = counts.get(k, 0) + 1

        def order(k: tuple[str, str]) -> tuple[int, int, str, str]:
            rank = MAIN_KEYS.index(k[1]) if k[1] in MAIN_KEYS else len(MAIN_KEYS)
            return (-counts[k], rank, k[1], k[0])

        return sorted(counts, key=order)

    def default_metric(self) -> tuple[str, str] | None:
        metrics = self.metrics()
        return metrics[0] if metrics else None

    def diff(self) -> list[tuple[str, list[Any]]]:
        return config_diff([self.details[r].run.spec or {} for r in self.run_ids if r in self.details])
