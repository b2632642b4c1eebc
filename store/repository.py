"""`Store`: every read and write of the workspace database.

All functions take keyword arguments and return `*Read` models (or plain
tuples for bulk series), so callers never hold a session. Bulk writes
(metrics, log lines) go through SQLAlchemy Core `executemany`, which is what
makes 100k metric points a sub-second write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import Engine, delete, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from .errors import NotFound, StoreError
from .feedback import Feedback, text_hash
from .models import (
    Artifact,
    ArtifactRead,
    Checkpoint,
    CheckpointRead,
    Event,
    EventRead,
    LogLine,
    LogLineRead,
    Metric,
    MetricRead,
    Prompt,
    PromptRead,
    Run,
    RunRead,
    RunStatus,
    Sample,
    SampleBatch,
    SampleBatchRead,
    Stage,
    StageRead,
    StageStatus,
    table_of,
    utcnow,
)
from .scores import RewardScores


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One point of a metric series; a bucket's summary when downsampled."""

    step: float
    value: float  # the mean over the bucket when downsampled
    low: float
    high: float
    wall_time: float


@dataclass(frozen=True, slots=True)
class MetricSummary:
    stage_id: int
    key: str
    count: int
    first: float
    last_step: int
    last: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class SampleView:
    """A sample together with its prompt's text: what people read and rank."""

    id: int
    prompt_id: int
    prompt: str
    response: str
    run_id: int | None
    stage_id: int | None
    batch_id: int | None
    step: int | None
    checkpoint: str | None
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewStage:
    name: str
    kind: str
    position: int
    parent: str | None
    config: Mapping[str, Any]


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: rank items, judgements and claims (store/feedback.py)
        self.feedback = Feedback(engine)
        #: reward models' scores of stored responses (store/scores.py)
        self.scores = RewardScores(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- runs ---------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str,
        spec_text: str,
        spec: Mapping[str, Any],
        spec_path: str | None,
        stages: Sequence[NewStage],
    ) -> RunRead:
        """Insert a queued run and its pending stages in one transaction."""
        for attempt in range(5):
            try:
                return self._insert_run(name, spec_text, spec, spec_path, stages)
            except IntegrityError:
                # Another process took the same name between our check and insert.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _insert_run(
        self,
        name: str,
        spec_text: str,
        spec: Mapping[str, Any],
        spec_path: str | None,
        stages: Sequence[NewStage],
    ) -> RunRead:
        with Session(self.engine) as session:
            run = Run(
                name=self._unique_name(session, name),
                spec_text=spec_text,
                spec=dict(spec),
                spec_path=spec_path,
            )
            session.add(run)
            session.flush()
            run_id = _saved_id(run)
            for stage in stages:
                session.add(
                    Stage(
                        run_id=run_id,
                        name=stage.name,
                        kind=stage.kind,
                        position=stage.position,
                        parent=stage.parent,
                        config=dict(stage.config),
                    )
                )
            session.add(Event(run_id=run_id, kind="RunQueued", data={"name": run.name}))
            session.commit()
            session.refresh(run)
            return RunRead.model_validate(run)

    @staticmethod
    def _unique_name(session: Session, base: str) -> str:
        taken = set(
            session.exec(
                select(Run.name).where(
                    (col(Run.name) == base) | col(Run.name).like(f"{base}-%")
                )
            )
        )
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def get_run(self, run: int | str) -> RunRead:
        """A run by numeric id or by name."""
        with Session(self.engine) as session:
            row: Run | None
            if isinstance(run, int) or (isinstance(run, str) and run.isdigit()):
                row = session.get(Run, int(run))
                if row is None and isinstance(run, str):
                    row = session.exec(select(Run).where(Run.name == run)).first()
            else:
                row = session.exec(select(Run).where(Run.name == run)).first()
            if row is None:
                raise NotFound(f"no run named or numbered {run!r}")
            return RunRead.model_validate(row)

    def list_runs(
        self, *, statuses: Iterable[RunStatus] | None = None, limit: int | None = None
    ) -> list[RunRead]:
        with Session(self.engine) as session:
            query = select(Run).order_by(col(Run.id).desc())
            if statuses is not None:
                query = query.where(col(Run.status).in_([str(s) for s in statuses]))
            if limit is not None:
                query = query.limit(limit)
            return [RunRead.model_validate(r) for r in session.exec(query)]

    def update_run(self, run_id: int, **fields: Any) -> None:
        self._update(Run, run_id, fields)

    def set_run_status_if(
        self, run_id: int, *, expected: Iterable[RunStatus], **fields: Any
    ) -> bool:
        """Compare-and-set: update only while the run is in an expected status.

        Used wherever two processes may race to record an outcome (the run
        process finishing vs. a reader marking it crashed)."""
        with Session(self.engine) as session:
            result = session.exec(
                update(Run)
                .where(col(Run.id) == run_id)
                .where(col(Run.status).in_([str(s) for s in expected]))
                .values(**fields)
            )
            session.commit()
            return result.rowcount == 1

    def heartbeat(self, run_id: int) -> None:
        self._update(Run, run_id, {"heartbeat_at": utcnow()})

    # --- stages -------------------------------------------------------------

    def list_stages(self, *, run_id: int) -> list[StageRead]:
        with Session(self.engine) as session:
            query = select(Stage).where(Stage.run_id == run_id).order_by(col(Stage.position))
            return [StageRead.model_validate(s) for s in session.exec(query)]

    def get_stage(self, *, stage_id: int) -> StageRead:
        with Session(self.engine) as session:
            row = session.get(Stage, stage_id)
            if row is None:
                raise NotFound(f"no stage with id {stage_id}")
            return StageRead.model_validate(row)

    def waiting_stages(self) -> list[StageRead]:
        """Stages of any run that wait for a device (the device queue)."""
        with Session(self.engine) as session:
            query = (
                select(Stage)
                .where(Stage.status == StageStatus.WAITING)
                .order_by(col(Stage.run_id), col(Stage.position))
            )
            return [StageRead.model_validate(s) for s in session.exec(query)]

    def update_stage(self, stage_id: int, **fields: Any) -> None:
        self._update(Stage, stage_id, fields)

    # --- metrics ------------------------------------------------------------

    def add_metrics(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Bulk insert: each point has run_id, stage_id, key, step, value, wall_time."""
        if not points:
            return
        with self.engine.begin() as connection:
            connection.execute(insert(Metric), list(points))

    def metrics_since(self, *, run_id: int, after_id: int = 0, limit: int = 10_000) -> list[MetricRead]:
        """New points of any key, in insertion order (for following a run live)."""
        with Session(self.engine) as session:
            query = (
                select(Metric)
                .where(Metric.run_id == run_id, col(Metric.id) > after_id)
                .order_by(col(Metric.id))
                .limit(limit)
            )
            return [MetricRead.model_validate(m) for m in session.exec(query)]

    def metric_keys(self, *, run_id: int) -> list[tuple[int, str]]:
        """(stage_id, key) pairs a run has logged."""
        with Session(self.engine) as session:
            query = (
                select(Metric.stage_id, Metric.key)
                .where(Metric.run_id == run_id)
                .distinct()
                .order_by(col(Metric.stage_id), col(Metric.key))
            )
            return [(s, k) for s, k in session.exec(query)]

    def stage_metric_keys(self, *, stage_id: int) -> list[str]:
        """Keys one stage has logged, sorted.

        A skip scan over ix_metric_stage_key_step: one index probe per key,
        so the console can look for new keys on every refresh of a run with
        millions of points (a DISTINCT over the rows reads every one)."""
        keys: list[str] = []
        with Session(self.engine) as session:
            key = session.exec(select(func.min(Metric.key)).where(Metric.stage_id == stage_id)).one()
            while key is not None:
                keys.append(key)
                key = session.exec(
                    select(func.min(Metric.key)).where(Metric.stage_id == stage_id, Metric.key > key)
                ).one()
        return keys

    def metric_series(
        self,
        *,
        stage_id: int,
        key: str,
        max_points: int | None = None,
        after_step: int | None = None,
    ) -> list[SeriesPoint]:
        """One key's series, in step order.

        With `max_points`, steps are bucketed in SQL (mean, min and max per
        bucket), so a chart of a million points costs one indexed scan and
        returns at most `max_points` rows, never a million Python objects."""
        if max_points is not None and max_points < 1:
            raise ValueError(f"max_points must be at least 1, got {max_points}")
        where = [Metric.stage_id == stage_id, Metric.key == key]
        if after_step is not None:
            where.append(Metric.step > after_step)
        with Session(self.engine) as session:
            if max_points is not None:
                lo, hi, n = session.exec(
                    select(func.min(Metric.step), func.max(Metric.step), func.count())
                    .where(*where)
                ).one()
                if n > max_points:  # then lo and hi are set; lo == hi gives one bucket
                    width = (hi - lo + 1) / max_points
                    bucket = func.cast((col(Metric.step) - lo) / width, table_of(Metric).c.step.type)
                    rows = session.exec(
                        select(  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
                            func.avg(Metric.step),
                            func.avg(Metric.value),
                            func.min(Metric.value),
                            func.max(Metric.value),
                            func.max(Metric.wall_time),
                        )
                        .where(*where)
                        .group_by(bucket)
                        .order_by(bucket)
                    )
                    return [SeriesPoint(*row) for row in rows]
            rows = session.exec(
                select(Metric.step, Metric.value, Metric.value, Metric.value, Metric.wall_time)  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
                .where(*where)
                .order_by(Metric.step, Metric.id)
            )
            return [SeriesPoint(*row) for row in rows]

    def metric_summaries(self, *, run_id: int) -> list[MetricSummary]:
        """Latest, min and max of every key of every stage of a run."""
        with Session(self.engine) as session:
            stats = session.exec(
                select(  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
                    Metric.stage_id,
                    Metric.key,
                    func.count(),
                    func.min(Metric.value),
                    func.max(Metric.value),
                    func.min(Metric.id),
                    func.max(Metric.id),
                )
                .where(Metric.run_id == run_id)
                .group_by(Metric.stage_id, Metric.key)
                .order_by(col(Metric.stage_id), col(Metric.key))
            ).all()
            ends = [row[5] for row in stats] + [row[6] for row in stats]
            by_id = {m.id: m for m in session.exec(select(Metric).where(col(Metric.id).in_(ends)))}
            return [
                MetricSummary(
                    stage_id=stage_id,
                    key=key,
                    count=count,
                    first=by_id[first_id].value,
                    last_step=by_id[last_id].step,
                    last=by_id[last_id].value,
                    low=low,
                    high=high,
                )
                for stage_id, key, count, low, high, first_id, last_id in stats
            ]

    def drop_metrics_after(self, *, stage_id: int, step: int) -> int:
        """Forget a stage's metrics logged after `step`: a stage resumed from
        the checkpoint of `step` logs those steps again, and the new values
        supersede the old (a chart shows each step once). Returns how many went."""
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(Metric).where(col(Metric.stage_id) == stage_id, col(Metric.step) > step)
            )
            return int(result.rowcount or 0)

    def last_metric_step(self, *, stage_id: int) -> int | None:
        with Session(self.engine) as session:
            return session.exec(
                select(func.max(Metric.step)).where(Metric.stage_id == stage_id)
            ).one()

    # --- logs ---------------------------------------------------------------

    def add_logs(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Bulk insert: each line has run_id, stage_id, stream, level, message (time optional)."""
        if not lines:
            return
        now = utcnow()
        rows = [{"time": now, "stream": "log", "level": "info", **line} for line in lines]
        with self.engine.begin() as connection:
            connection.execute(insert(LogLine), rows)

    def logs_since(
        self, *, run_id: int, after_id: int = 0, limit: int = 1000, stage_id: int | None = None
    ) -> list[LogLineRead]:
        with Session(self.engine) as session:
            query = _where_given(
                select(LogLine).where(LogLine.run_id == run_id, col(LogLine.id) > after_id),
                (LogLine.stage_id, stage_id),
            ).order_by(col(LogLine.id)).limit(limit)
            return [LogLineRead.model_validate(r) for r in session.exec(query)]

    # --- events -------------------------------------------------------------

    def add_event(
        self,
        *,
        run_id: int,
        kind: str,
        stage_id: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        with Session(self.engine) as session:
            session.add(Event(run_id=run_id, stage_id=stage_id, kind=kind, data=dict(data or {})))
            session.commit()

    def events_since(self, *, run_id: int, after_id: int = 0) -> list[EventRead]:
        with Session(self.engine) as session:
            query = (
                select(Event)
                .where(Event.run_id == run_id, col(Event.id) > after_id)
                .order_by(col(Event.id))
            )
            return [EventRead.model_validate(r) for r in session.exec(query)]

    # --- checkpoints --------------------------------------------------------

    def add_checkpoint(
        self, *, run_id: int, stage_id: int, step: int, path: str, is_final: bool = False
    ) -> CheckpointRead:
        with Session(self.engine) as session:
            row = Checkpoint(
                run_id=run_id, stage_id=stage_id, step=step, path=path, is_final=is_final
            )
            session.add(row)
            session.add(
                Event(
                    run_id=run_id,
                    stage_id=stage_id,
                    kind="CheckpointSaved",
                    data={"step": step, "path": path, "final": is_final},
                )
            )
            return _committed(session, row, CheckpointRead)

    def list_checkpoints(
        self, *, run_id: int | None = None, stage_id: int | None = None
    ) -> list[CheckpointRead]:
        with Session(self.engine) as session:
            query = _where_given(
                select(Checkpoint).order_by(col(Checkpoint.id)),
                (Checkpoint.run_id, run_id), (Checkpoint.stage_id, stage_id),
            )
            return [CheckpointRead.model_validate(r) for r in session.exec(query)]

    def remove_checkpoints(self, ids: Iterable[int]) -> None:
        """Forget checkpoints whose folders were rotated away."""
        ids = list(ids)
        if not ids:
            return
        with Session(self.engine) as session:
            for row in session.exec(select(Checkpoint).where(col(Checkpoint.id).in_(ids))):
                session.delete(row)
            session.commit()

    # --- artifacts ----------------------------------------------------------

    def add_artifact(
        self,
        *,
        kind: str,
        name: str,
        path: str,
        run_id: int | None = None,
        stage_id: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> ArtifactRead:
        with Session(self.engine) as session:
            row = Artifact(
                run_id=run_id, stage_id=stage_id, kind=kind, name=name, path=path,
                meta=dict(meta or {}),
            )
            session.add(row)
            return _committed(session, row, ArtifactRead)

    def list_artifacts(
        self, *, run_id: int | None = None, kind: str | None = None
    ) -> list[ArtifactRead]:
        with Session(self.engine) as session:
            query = _where_given(
                select(Artifact).order_by(col(Artifact.id)), (Artifact.run_id, run_id), (Artifact.kind, kind),
            )
            return [ArtifactRead.model_validate(r) for r in session.exec(query)]

    # --- prompts and samples --------------------------------------------------

    def add_prompts(self, prompts: Sequence[Mapping[str, Any]]) -> list[int]:
        """Get-or-create prompts by their text; returns their ids in order.

        Each has `text` and optionally `source`, `reference`, `meta`."""
        hashes = [text_hash(p["text"]) for p in prompts]
        with Session(self.engine) as session:
            known = {
                row.text_hash: _saved_id(row)
                for row in session.exec(select(Prompt).where(col(Prompt.text_hash).in_(set(hashes))))
            }
            for prompt, digest in zip(prompts, hashes):
                if digest not in known:
                    row = Prompt(
                        text=prompt["text"], text_hash=digest, source=prompt.get("source"),
                        reference=prompt.get("reference"), meta=dict(prompt.get("meta") or {}),
                    )
                    session.add(row)
                    session.flush()
                    known[digest] = _saved_id(row)
            session.commit()
        return [known[h] for h in hashes]

    def get_prompts(self, ids: Iterable[int]) -> list[PromptRead]:
        with Session(self.engine) as session:
            rows = session.exec(select(Prompt).where(col(Prompt.id).in_(list(ids))).order_by(col(Prompt.id)))
            return [PromptRead.model_validate(r) for r in rows]

    def create_sample_batch(
        self,
        *,
        name: str,
        settings: Mapping[str, Any],
        sources: Sequence[str],
        run_id: int | None = None,
        stage_id: int | None = None,
    ) -> SampleBatchRead:
        with Session(self.engine) as session:
            row = SampleBatch(
                name=name, settings=dict(settings), sources=list(sources), run_id=run_id, stage_id=stage_id
            )
            session.add(row)
            return _committed(session, row, SampleBatchRead)

    def list_sample_batches(self, *, run_id: int | None = None) -> list[SampleBatchRead]:
        with Session(self.engine) as session:
            query = _where_given(select(SampleBatch).order_by(col(SampleBatch.id)), (SampleBatch.run_id, run_id))
            return [SampleBatchRead.model_validate(r) for r in session.exec(query)]

    def add_samples(self, samples: Sequence[Mapping[str, Any]]) -> None:
        """Bulk insert: each has prompt_id and response, and any of batch_id,
        run_id, stage_id, step, checkpoint, meta."""
        if not samples:
            return
        now = utcnow()
        rows = [
            {"batch_id": None, "run_id": None, "stage_id": None, "step": None, "checkpoint": None,
             "created_at": now, **sample, "meta": dict(sample.get("meta") or {})}
            for sample in samples
        ]
        with self.engine.begin() as connection:
            connection.execute(insert(Sample), rows)

    def list_samples(
        self,
        *,
        run_id: int | None = None,
        stage_id: int | None = None,
        batch_id: int | None = None,
        step: int | None = None,
        limit: int | None = None,
    ) -> list[SampleView]:
        with Session(self.engine) as session:
            query = _where_given(
                select(Sample, Prompt.text).join(Prompt, col(Prompt.id) == Sample.prompt_id),
                (Sample.run_id, run_id), (Sample.stage_id, stage_id),
                (Sample.batch_id, batch_id), (Sample.step, step),
            ).order_by(col(Sample.id))
            if limit is not None:
                query = query.limit(limit)
            return [
                SampleView(
                    id=_saved_id(sample), prompt_id=sample.prompt_id, prompt=prompt_text,
                    response=sample.response, run_id=sample.run_id, stage_id=sample.stage_id,
                    batch_id=sample.batch_id, step=sample.step, checkpoint=sample.checkpoint,
                    meta=dict(sample.meta),
                )
                for sample, prompt_text in session.exec(query)
            ]

    def sample_steps(self, *, stage_id: int) -> list[int]:
        """Training steps at which a stage stored samples."""
        with Session(self.engine) as session:
            query = (
                select(col(Sample.step)).where(Sample.stage_id == stage_id, col(Sample.step).is_not(None))
                .distinct().order_by(col(Sample.step))
            )
            return [step for step in session.exec(query) if step is not None]  # none are: the query skips them

    # --- helpers ------------------------------------------------------------

    def _update(self, table: type[Run] | type[Stage], row_id: int, fields: Mapping[str, Any]) -> None:
        if not fields:
            return
        with Session(self.engine) as session:
            result = session.exec(
                update(table).where(col(table.id) == row_id).values(**fields)
            )
            session.commit()
            if result.rowcount != 1:
                raise NotFound(f"no {table.__name__.lower()} with id {row_id}")


class _Narrowable(Protocol):
    def where(self, *whereclause: Any) -> Self: ...


_Query = TypeVar("_Query", bound=_Narrowable)


def _where_given(query: _Query, *filters: tuple[Any, object]) -> _Query:
    """`query` kept to the rows whose column equals the value, for each
    (column, value) pair whose value is given: None stands for any value
    (the list methods' optional filters)."""
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    return query


_Read = TypeVar("_Read", bound=SQLModel)


def _committed(session: Session, row: SQLModel, read: type[_Read]) -> _Read:
    """Commit `session`, and `row`, added to it, as the database now holds it
    (with its id), as the `read` model the store hands out."""
    session.commit()
    session.refresh(row)
    return read.model_validate(row)


class _Row(Protocol):
    id: int | None


def _saved_id(row: _Row) -> int:
    """The id of a row read from the database or flushed to it (the database
    sets it; only a row never written has none)."""
    if row.id is None:
        raise StoreError(f"a {type(row).__name__} row that was never written has no id")
    return row.id
