"""The run store: one SQLite database per workspace, the single source of truth.

Imports nothing else from this project. `import store` itself is cheap: the
names below are loaded from their modules on first use (PEP 562), so code
that needs only a status, an error or the plain-SQLite reads of
`store.reads` (the console's first screen) never imports SQLAlchemy; asking
for `Store`, a `*Read` model or `Feedback` imports the ORM then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import NotFound, StoreError, WorkspaceError, is_busy, is_read_only
from .status import JudgementOutcome, RunStatus, StageStatus, utcnow

if TYPE_CHECKING:
    from .feedback import (
        CLAIM_TTL,
        Feedback,
        FeedbackError,
        ImportedItem,
        ImportedResponse,
        ItemView,
        LiveJudgement,
        Progress,
        RankBatch,
        Response,
        ranking_members,
        shown_order,
    )
    from .models import (
        ArtifactRead,
        CheckpointRead,
        EventRead,
        JudgementRead,
        LogLineRead,
        MetricRead,
        PromptRead,
        RankItemRead,
        RewardScoreRead,
        RunRead,
        SampleBatchRead,
        SampleRead,
        StageRead,
    )
    from .repository import MetricSummary, NewStage, SampleView, SeriesPoint, Store
    from .scores import RewardScores
    from .workspace import ENV_VAR, Workspace, open_workspace, resolve_workspace_dir, why_not_writable

#: name -> the submodule that defines it, imported when the name is first asked for
_LAZY = {
    **dict.fromkeys(
        ("CLAIM_TTL", "Feedback", "FeedbackError", "ImportedItem", "ImportedResponse", "ItemView",
         "LiveJudgement", "Progress", "RankBatch", "Response", "ranking_members", "shown_order"),
        "feedback",
    ),
    **dict.fromkeys(
        ("ArtifactRead", "CheckpointRead", "EventRead", "JudgementRead", "LogLineRead", "MetricRead",
         "PromptRead", "RankItemRead", "RewardScoreRead", "RunRead", "SampleBatchRead", "SampleRead",
         "StageRead"),
        "models",
    ),
    **dict.fromkeys(("MetricSummary", "NewStage", "SampleView", "SeriesPoint", "Store"), "repository"),
    "RewardScores": "scores",
    **dict.fromkeys(("ENV_VAR", "Workspace", "open_workspace", "resolve_workspace_dir", "why_not_writable"),
                    "workspace"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CLAIM_TTL",
    "ENV_VAR",
    "ArtifactRead",
    "CheckpointRead",
    "EventRead",
    "Feedback",
    "FeedbackError",
    "ImportedItem",
    "ImportedResponse",
    "ItemView",
    "JudgementOutcome",
    "JudgementRead",
    "LiveJudgement",
    "LogLineRead",
    "MetricRead",
    "MetricSummary",
    "NewStage",
    "NotFound",
    "Progress",
    "PromptRead",
    "RankBatch",
    "RankItemRead",
    "Response",
    "RewardScoreRead",
    "RewardScores",
    "RunRead",
    "RunStatus",
    "SampleBatchRead",
    "SampleRead",
    "SampleView",
    "SeriesPoint",
    "StageRead",
    "StageStatus",
    "Store",
    "StoreError",
    "Workspace",
    "WorkspaceError",
    "is_busy",
    "is_read_only",
    "open_workspace",
    "ranking_members",
    "resolve_workspace_dir",
    "shown_order",
    "utcnow",
    "why_not_writable",
]
