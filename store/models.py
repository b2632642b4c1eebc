"""Table models and the plain read models the store hands out.

Every table has a `*Read` twin: callers get detached, immutable-by-convention
pydantic objects, never session-bound ORM rows, so nothing outside `store/`
can trigger lazy loads or accidental writes.

Schema changes go through an Alembic migration in `store/migrations/versions`;
`tests/store/test_migrations.py` fails when the models and migrations disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Table, Text
from sqlmodel import Field, SQLModel

# The statuses and the clock live in a module without SQLAlchemy (the console's first
# screen reads them); re-exported here, where every table uses them.
from .status import JudgementOutcome, RunStatus, StageStatus, utcnow

# --- runs -------------------------------------------------------------------


class RunBase(SQLModel):
    name: str = Field(index=True, unique=True)
    spec_path: str | None = None  # where the spec was read from, for people
    spec_text: str = Field(sa_column=Column(Text, nullable=False))  # as submitted
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Statuses are stored as their lowercase value so raw SQL stays readable.
    status: RunStatus = Field(
        default=RunStatus.QUEUED, sa_column=Column(String, nullable=False, index=True)
    )
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    host: str | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    error: str | None = None
    attempt: int = 1  # bumped by each resume


class Run(RunBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class RunRead(RunBase):
    id: int


# --- stages -----------------------------------------------------------------


class StageBase(SQLModel):
    run_id: int = Field(foreign_key="run.id", index=True)
    name: str
    kind: str
    position: int  # order of execution within the run
    parent: str | None = None  # the stage whose output it starts from, if any
    status: StageStatus = Field(
        default=StageStatus.PENDING, sa_column=Column(String, nullable=False)
    )
    step: int = 0
    total: int | None = None
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    device: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output_path: str | None = None  # the stage's final model/data folder
    error: str | None = None
    traceback: str | None = Field(default=None, sa_column=Column(Text))
    attempt: int = 0


class Stage(StageBase, table=True):
    __table_args__ = (Index("ix_stage_run_name", "run_id", "name", unique=True),)
    id: int | None = Field(default=None, primary_key=True)


class StageRead(StageBase):
    id: int


# --- metrics (long form) ----------------------------------------------------


class MetricBase(SQLModel):
    run_id: int = Field(foreign_key="run.id")
    stage_id: int = Field(foreign_key="stage.id")
    key: str
    step: int
    value: float
    wall_time: float  # seconds since the epoch, for a wall-time x-axis


class Metric(MetricBase, table=True):
    # One key's series of one stage is the hot read (charts, `rlhf metrics`).
    __table_args__ = (
        Index("ix_metric_stage_key_step", "stage_id", "key", "step"),
        Index("ix_metric_run_key", "run_id", "key"),
        # `metrics_since(run, after_id)`: the console's poll, cheap even on a 1M-point run.
        Index("ix_metric_run_id", "run_id", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)


class MetricRead(MetricBase):
    id: int


# --- checkpoints ------------------------------------------------------------


class CheckpointBase(SQLModel):
    run_id: int = Field(foreign_key="run.id", index=True)
    stage_id: int = Field(foreign_key="stage.id", index=True)
    step: int
    path: str
    created_at: datetime = Field(default_factory=utcnow)
    is_final: bool = False  # the stage's finished output, not a resumable step


class Checkpoint(CheckpointBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class CheckpointRead(CheckpointBase):
    id: int


# --- log lines --------------------------------------------------------------


class LogLineBase(SQLModel):
    run_id: int = Field(foreign_key="run.id")
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    time: datetime = Field(default_factory=utcnow)
    stream: str = "log"  # stdout, stderr, log (our own messages)
    level: str = "info"
    message: str = Field(sa_column=Column(Text, nullable=False))


class LogLine(LogLineBase, table=True):
    __tablename__ = "logline"
    __table_args__ = (Index("ix_logline_run_id", "run_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)


class LogLineRead(LogLineBase):
    id: int


# --- events -----------------------------------------------------------------


class EventBase(SQLModel):
    """Lifecycle history of a run: RunStarted, StageStarted, CheckpointSaved, ..."""

    run_id: int = Field(foreign_key="run.id")
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    time: datetime = Field(default_factory=utcnow)
    kind: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Event(EventBase, table=True):
    __table_args__ = (Index("ix_event_run_id", "run_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)


class EventRead(EventBase):
    id: int


# --- artifacts and datasets -------------------------------------------------


class ArtifactBase(SQLModel):
    """Anything a stage produced or consumed that is not a checkpoint:
    tokenizers, datasets, sample files, exports."""

    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    kind: str  # tokenizer, dataset, model, samples, export
    name: str
    path: str
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Artifact(ArtifactBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class ArtifactRead(ArtifactBase):
    id: int


# --- prompts and samples -----------------------------------------------------


class PromptBase(SQLModel):
    """A prompt, stored once however many stages answer it (deduplicated by hash)."""

    text: str = Field(sa_column=Column(Text, nullable=False))
    text_hash: str = Field(index=True, unique=True)  # sha256 of the text
    source: str | None = None  # where it came from: a data set, builtin:NAME, a person
    reference: str | None = Field(default=None, sa_column=Column(Text))  # a reference answer, if any
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Prompt(PromptBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class PromptRead(PromptBase):
    id: int


class SampleBatchBase(SQLModel):
    """Responses generated together with one set of sampling settings, e.g.
    K responses per prompt for people to rank."""

    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    name: str
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sources: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class SampleBatch(SampleBatchBase, table=True):
    __tablename__ = "samplebatch"
    id: int | None = Field(default=None, primary_key=True)


class SampleBatchRead(SampleBatchBase):
    id: int


class SampleBase(SQLModel):
    """One response to one prompt, with its provenance: which model wrote it
    (checkpoint), at which training step, in which batch, with what settings."""

    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    batch_id: int | None = Field(default=None, foreign_key="samplebatch.id")
    run_id: int | None = Field(default=None, foreign_key="run.id")
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    step: int | None = None  # training step, for samples taken while training
    checkpoint: str | None = None  # the model folder that generated it
    response: str = Field(sa_column=Column(Text, nullable=False))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Sample(SampleBase, table=True):
    __table_args__ = (
        Index("ix_sample_stage_step", "stage_id", "step"),
        Index("ix_sample_batch_prompt", "batch_id", "prompt_id"),
    )
    id: int | None = Field(default=None, primary_key=True)


class SampleRead(SampleBase):
    id: int


# --- human feedback ---------------------------------------------------------


class RankItemBase(SQLModel):
    """One thing to judge: two or more responses to one prompt, from a sample batch.

    `needed` is how many different annotators should judge it; `verdicts` is
    how many live verdicts it has, kept in the same transaction as every
    judgement so serving the next item is one indexed query."""

    batch_id: int = Field(foreign_key="samplebatch.id")
    prompt_id: int = Field(foreign_key="prompt.id")
    sample_ids: list[int] = Field(sa_column=Column(JSON, nullable=False))
    position: int  # serving order within the batch
    needed: int = 1
    verdicts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    # active order: where the ranking job last placed it (None: served by position)
    serve_rank: int | None = None
    # a gold item's known answer, best first (never shown to annotators as such)
    gold: list[int | list[int]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class RankItem(RankItemBase, table=True):
    __tablename__ = "rankitem"
    __table_args__ = (Index("ix_rankitem_batch_position", "batch_id", "position"),)
    id: int | None = Field(default=None, primary_key=True)


class RankItemRead(RankItemBase):
    id: int


class JudgementBase(SQLModel):
    """One annotator's say on one item. Append-only: an undo or an edit is a new
    row that `supersedes` the old one, so nothing a person did is ever lost."""

    item_id: int = Field(foreign_key="rankitem.id")
    batch_id: int = Field(foreign_key="samplebatch.id", index=True)
    annotator: str = Field(index=True)  # a person's name, or judge:NAME, or import:FILE
    #: imported rows only: the annotator the file named (never trusted as who judged: that is import:FILE)
    source_annotator: str | None = None
    outcome: str  # a JudgementOutcome value
    shown: list[int] = Field(sa_column=Column(JSON, nullable=False))  # sample ids as shown, A first
    # Best first: a sample id per place, or a list of ids tied for it (store.feedback.ranking_tiers).
    ranking: list[int | list[int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    comment: str | None = Field(default=None, sa_column=Column(Text))
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    seconds: float | None = None  # time from showing the item to the judgement
    supersedes: int | None = Field(default=None, foreign_key="judgement.id", unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class Judgement(JudgementBase, table=True):
    __table_args__ = (Index("ix_judgement_item_annotator", "item_id", "annotator"),)
    id: int | None = Field(default=None, primary_key=True)


class JudgementRead(JudgementBase):
    id: int


class ItemClaim(SQLModel, table=True):
    """An item on an annotator's screen (or prefetched for it). Claims keep two
    annotators from both taking the last judgement an item needs; they expire,
    so a console that was killed does not hold items forever."""

    __tablename__ = "itemclaim"
    item_id: int = Field(foreign_key="rankitem.id", primary_key=True)
    annotator: str = Field(primary_key=True)
    claimed_at: datetime = Field(default_factory=utcnow)


# --- reward scores ----------------------------------------------------------


class RewardScoreBase(SQLModel):
    """A reward model's score for one stored response. `scorer` names the reward
    model (its folder, or hub id), so several reward models can score the same
    batch and every score says which one gave it."""

    sample_id: int = Field(foreign_key="sample.id", index=True)
    scorer: str
    value: float
    created_at: datetime = Field(default_factory=utcnow)


class RewardScore(RewardScoreBase, table=True):
    __tablename__ = "rewardscore"
    id: int | None = Field(default=None, primary_key=True)


class RewardScoreRead(RewardScoreBase):
    id: int


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model, for the bulk statements that skip the ORM."""
    # SQLModel's metaclass sets __table__ on table=True classes; its type stubs do not declare it.
    return model.__table__  # type: ignore[attr-defined]


__all__ = [
    "Artifact",
    "ArtifactRead",
    "Checkpoint",
    "CheckpointRead",
    "Event",
    "EventRead",
    "ItemClaim",
    "Judgement",
    "JudgementOutcome",
    "JudgementRead",
    "LogLine",
    "LogLineRead",
    "Metric",
    "MetricRead",
    "Prompt",
    "PromptRead",
    "RankItem",
    "RankItemRead",
    "RewardScore",
    "RewardScoreRead",
    "Run",
    "RunRead",
    "RunStatus",
    "Sample",
    "SampleBatch",
    "SampleBatchRead",
    "SampleRead",
    "Stage",
    "StageRead",
    "StageStatus",
    "table_of",
    "utcnow",
]
