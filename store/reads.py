"""The console's read API: what a front end may read from the store, and nothing it may write.

Two parts, both read-only:

- `StoreReader` (with `FeedbackReader` and `ScoresReader`): the typed subset
  of `Store`'s methods a front end reads through. `Store` satisfies it as it
  is (a structural `Protocol`), so the reads are the store's own, with no
  second copy to drift; the engine hands a front end its store typed as a
  `StoreReader` (`Engine.reads`), which leaves every write method out of
  what a type checker lets it call. Writes go through the engine.
- `list_runs` / `list_stages`: the runs list read with the standard library's
  sqlite3, without SQLAlchemy. The console's first screen needs only these,
  and importing the ORM costs more than the rest of the console's start-up.
  They return `RunListing` / `StageListing`, plain records with the same
  field names (and values) as `RunRead` / `StageRead`, less the JSON columns.

Why here, in store/: the reads are the store's knowledge of its schema, so
they live beside it; `tests/store/test_reads.py` checks that the plain reads
agree with the ORM's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .db import read_only_uri, writable
from .errors import StoreError
from .status import RunStatus, StageStatus

if TYPE_CHECKING:
    from .feedback import LiveJudgement, Progress, RankBatch
    from .models import CheckpointRead, JudgementRead, LogLineRead, RewardScoreRead, RunRead, SampleBatchRead, StageRead
    from .repository import MetricSummary, SampleView, SeriesPoint


# --- the typed read-only view of `Store` ---------------------------------------------------------


class FeedbackReader(Protocol):
    """Reads of rank items and judgements (`store.feedback.Feedback`)."""

    def judgements(self, *, batch_id: int | None = None, annotator: str | None = None) -> list[JudgementRead]: ...

    def live_judgements(
        self, *, batch_ids: Sequence[int] | None = None, annotators: Sequence[str] | None = None,
    ) -> list[LiveJudgement]: ...

    def progress(self, *, batch_id: int, annotator: str | None = None) -> Progress: ...

    def rank_batches(self) -> list[RankBatch]: ...

    def find_batch(self, ref: str | int | None) -> int: ...


class ScoresReader(Protocol):
    """Reads of reward models' scores (`store.scores.RewardScores`)."""

    def scores_for(self, sample_ids: Iterable[int], *, scorer: str | None = None) -> list[RewardScoreRead]: ...


class StoreReader(Protocol):
    """Every read a front end makes of the store (`store.repository.Store` satisfies it)."""

    @property
    def feedback(self) -> FeedbackReader: ...

    @property
    def scores(self) -> ScoresReader: ...

    def get_run(self, run: int | str) -> RunRead: ...

    def list_runs(self, *, statuses: Iterable[RunStatus] | None = None, limit: int | None = None) -> list[RunRead]: ...

    def list_stages(self, *, run_id: int) -> list[StageRead]: ...

    def list_checkpoints(self, *, run_id: int | None = None, stage_id: int | None = None) -> list[CheckpointRead]: ...

    def metric_keys(self, *, run_id: int) -> list[tuple[int, str]]: ...

    def stage_metric_keys(self, *, stage_id: int) -> list[str]: ...

    def metric_series(
        self, *, stage_id: int, key: str, max_points: int | None = None, after_step: int | None = None,
    ) -> list[SeriesPoint]: ...

    def metric_summaries(self, *, run_id: int) -> list[MetricSummary]: ...

    def logs_since(
        self, *, run_id: int, after_id: int = 0, limit: int = 1000, stage_id: int | None = None,
    ) -> list[LogLineRead]: ...

    def list_sample_batches(self, *, run_id: int | None = None) -> list[SampleBatchRead]: ...

    def list_samples(
        self, *, run_id: int | None = None, stage_id: int | None = None, batch_id: int | None = None,
        step: int | None = None, limit: int | None = None,
    ) -> list[SampleView]: ...

    def sample_steps(self, *, stage_id: int) -> list[int]: ...


# --- the runs list without the ORM ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunListing:
    """A run as the runs list shows it: `RunRead`'s fields less the spec."""

    id: int
    name: str
    status: RunStatus
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    pid: int | None
    host: str | None
    error: str | None
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class StageListing:
    """A stage as the runs list shows it: `StageRead`'s fields less config and traceback."""

    id: int
    run_id: int
    name: str
    kind: str
    position: int
    status: StageStatus
    step: int
    total: int | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


_RUN_COLUMNS = ("id", "name", "status", "attempt", "created_at", "started_at", "finished_at", "heartbeat_at",
                "pid", "host", "error", "cancel_requested")
_STAGE_COLUMNS = ("id", "run_id", "name", "kind", "position", "status", "step", "total", "started_at",
                  "finished_at", "error")


def _when(value: str | None) -> datetime | None:
    """A stored time as the ORM returns it: SQLite keeps it as naive UTC text."""
    return None if value is None else _moment(value)


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _query(db_path: Path, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
    """Rows of one read, on a connection of its own (opened read-only: a reader
    never creates or changes the file; WAL lets it read while runs write).

    A WAL reader must still create or update the -shm index beside the file,
    which a read-only folder or a full disk refuses: then the read is made as
    `rlhf ls` makes it there (db.read_only_uri), without locks or the index,
    right while nobody can write, as nobody can there."""
    try:
        return _query_at(f"{Path(db_path).as_uri()}?mode=ro", db_path, sql, parameters)
    except StoreError:
        if writable(db_path):
            raise
        return _query_at(read_only_uri(db_path), db_path, sql, parameters)


def _query_at(uri: str, db_path: Path, sql: str, parameters: Sequence[object]) -> list[sqlite3.Row]:
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot open the database ({exc})") from exc
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute(sql, parameters).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot read the database ({exc})") from exc
    finally:
        connection.close()


def list_runs(db_path: Path, *, statuses: Iterable[RunStatus] | None = None) -> list[RunListing]:
    """Every run (or those in `statuses`), newest first, as `Store.list_runs` orders them."""
    sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM run"
    parameters: list[object] = []
    if statuses is not None:
        wanted = [str(s) for s in statuses]
        sql += f" WHERE status IN ({', '.join('?' * len(wanted))})"
        parameters.extend(wanted)
    return [
        RunListing(
            id=row["id"], name=row["name"], status=RunStatus(row["status"]), attempt=row["attempt"],
            created_at=_moment(row["created_at"]), started_at=_when(row["started_at"]),
            finished_at=_when(row["finished_at"]), heartbeat_at=_when(row["heartbeat_at"]),
            pid=row["pid"], host=row["host"], error=row["error"], cancel_requested=bool(row["cancel_requested"]),
        )
        for row in _query(db_path, sql + " ORDER BY id DESC", parameters)
    ]


def list_stages(db_path: Path, *, run_ids: Iterable[int]) -> dict[int, list[StageListing]]:
    """The stages of each run in `run_ids`, in their order (`Store.list_stages` for many runs at once)."""
    wanted = [int(r) for r in run_ids]
    stages: dict[int, list[StageListing]] = {run_id: [] for run_id in wanted}
    if not wanted:
        return stages
    rows = _query(
        db_path,
        f"SELECT {', '.join(_STAGE_COLUMNS)} FROM stage WHERE run_id IN ({', '.join('?' * len(wanted))})"
        " ORDER BY run_id, position",
        wanted,
    )
    for row in rows:
        stages[row["run_id"]].append(StageListing(
            id=row["id"], run_id=row["run_id"], name=row["name"], kind=row["kind"], position=row["position"],
            status=StageStatus(row["status"]), step=row["step"], total=row["total"],
            started_at=_when(row["started_at"]), finished_at=_when(row["finished_at"]), error=row["error"],
        ))
    return stages


__all__ = [
    "FeedbackReader",
    "RunListing",
    "ScoresReader",
    "StageListing",
    "StoreReader",
    "list_runs",
    "list_stages",
]
