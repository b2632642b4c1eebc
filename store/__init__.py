"""The run store: one SQLite database per workspace, the single source of truth.

Imports nothing else from this project, and nothing heavy: the console and the
CLI open it on every start.
"""

from .errors import NotFound, StoreError, WorkspaceError
from .models import (
    ArtifactRead,
    CheckpointRead,
    EventRead,
    LogLineRead,
    MetricRead,
    JudgementOutcome,
    JudgementRead,
    PromptRead,
    RankItemRead,
    RewardScoreRead,
    RunRead,
    RunStatus,
    SampleBatchRead,
    SampleRead,
    StageRead,
    StageStatus,
    utcnow,
)
from .feedback import CLAIM_TTL, Feedback, FeedbackError, ImportedItem, ImportedResponse, ItemView, LiveJudgement, Progress, RankBatch, Response, shown_order
from .scores import RewardScores
from .repository import MetricSummary, NewStage, SampleView, SeriesPoint, Store
from .workspace import ENV_VAR, Workspace, open_workspace, resolve_workspace_dir

__all__ = [
    "CLAIM_TTL",
    "Feedback",
    "FeedbackError",
    "ImportedItem",
    "ImportedResponse",
    "ItemView",
    "JudgementOutcome",
    "JudgementRead",
    "LiveJudgement",
    "Progress",
    "RankBatch",
    "RankItemRead",
    "RewardScoreRead",
    "RewardScores",
    "Response",
    "shown_order",
    "ENV_VAR",
    "ArtifactRead",
    "CheckpointRead",
    "EventRead",
    "LogLineRead",
    "MetricRead",
    "MetricSummary",
    "PromptRead",
    "SampleBatchRead",
    "SampleRead",
    "SampleView",
    "NewStage",
    "NotFound",
    "RunRead",
    "RunStatus",
    "SeriesPoint",
    "StageRead",
    "StageStatus",
    "Store",
    "StoreError",
    "Workspace",
    "WorkspaceError",
    "open_workspace",
    "resolve_workspace_dir",
    "utcnow",
]
