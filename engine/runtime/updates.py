"""What following a run yields: small immutable updates, each JSON-able.

`rlhf run --json` prints exactly `update.to_json()` per line, so these
shapes are the headless mode's contract with scripts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Update:
    run_id: int

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        data = {"type": self.type, **asdict(self)}
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


@dataclass(frozen=True)
class LifecycleEvent(Update):
    """RunQueued, RunStarted, StageWaiting, StageStarted, CheckpointSaved,
    StageSucceeded/Failed/Cancelled/Crashed, RunSucceeded/Failed/Cancelled/Crashed."""

    event: str
    stage: str | None
    time: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageProgress(Update):
    stage: str
    status: str
    step: int
    total: int | None


@dataclass(frozen=True)
class MetricsLogged(Update):
    stage: str
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class LogEmitted(Update):
    stage: str | None
    stream: str
    level: str
    message: str
    time: datetime


@dataclass(frozen=True)
class RunFinished(Update):
    """The last update of a follow: the run reached a final status."""

    status: str
    error: str | None
