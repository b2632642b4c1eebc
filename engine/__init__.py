"""The engine: validate pipeline specs, run them as detached processes, follow them.

This package's public API is torch-free; only `engine.stages.*` modules (run
inside worker processes) import torch, transformers, trl, peft or accelerate.
"""

from .api import Engine, RunDetail, Series
from .errors import (
    EngineError,
    InvalidRunState,
    RunNotFound,
    SpecError,
    StageCancelled,
    StageFailed,
    UserInputError,
)
from .spec import EXAMPLE_SPEC, PipelineSpec, load_spec, parse_spec
from .updates import LifecycleEvent, LogEmitted, MetricsLogged, RunFinished, StageProgress, Update

__all__ = [
    "EXAMPLE_SPEC",
    "Engine",
    "EngineError",
    "InvalidRunState",
    "LifecycleEvent",
    "LogEmitted",
    "MetricsLogged",
    "PipelineSpec",
    "RunDetail",
    "RunFinished",
    "RunNotFound",
    "Series",
    "SpecError",
    "StageCancelled",
    "StageFailed",
    "StageProgress",
    "Update",
    "UserInputError",
    "load_spec",
    "parse_spec",
]
