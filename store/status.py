"""The store's enums and clock, free of SQLAlchemy.

Statuses are stored as their lowercase value. This module imports only the
standard library, so code that only needs to name a status (the console's
first screen, `store.reads`) does not pay for the ORM's import.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunStatus(StrEnum):
    QUEUED = "queued"        # submitted, waiting for its process or a device
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"        # a stage raised an error
    CANCELLED = "cancelled"  # a person or script asked it to stop
    CRASHED = "crashed"      # its process died without recording an outcome

    @property
    def is_active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def is_resumable(self) -> bool:
        return self in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CRASHED)


class StageStatus(StrEnum):
    PENDING = "pending"      # not reached yet
    WAITING = "waiting"      # waiting for a free device
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def is_finished(self) -> bool:
        return self in (
            StageStatus.SUCCEEDED,
            StageStatus.FAILED,
            StageStatus.CANCELLED,
            StageStatus.CRASHED,
        )


class JudgementOutcome(StrEnum):
    """What an annotator said about an item. A and B are the responses in the
    order they were *shown* (left/right, or top/bottom when stacked)."""

    A_BETTER = "a_better"
    B_BETTER = "b_better"
    TIE = "tie"
    BOTH_BAD = "both_bad"
    RANKING = "ranking"  # a full order of K responses, best first
    SKIPPED = "skipped"  # seen and passed over: counts for the annotator, not for the item
    UNDONE = "undone"    # withdraws the judgement it supersedes

    @property
    def is_verdict(self) -> bool:
        """Counts towards the judgements an item needs."""
        return self not in (JudgementOutcome.SKIPPED, JudgementOutcome.UNDONE)


__all__ = ["JudgementOutcome", "RunStatus", "StageStatus", "utcnow"]
