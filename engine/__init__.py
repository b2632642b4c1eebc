"""The engine: validate pipeline specs, run them as detached processes, follow them.

This package's public API is torch-free; only `engine.stages.*` modules (run
inside worker processes) import torch, transformers, trl, peft or accelerate.
"""

from engine.runtime.api import Engine
from engine.runtime.api import RunDetail
from engine.runtime.api import Series
from engine.errors import (
    EngineError,
    InvalidRunState,
    RunNotFound,
    SpecError,
    StageCancelled,
    StageFailed,
    UserInputError,
)
from engine.spec import EXAMPLE_SPEC, PipelineSpec, load_spec, parse_spec
from engine.runtime.updates import LifecycleEvent
from engine.runtime.updates import LogEmitted
from engine.runtime.updates import MetricsLogged
from engine.runtime.updates import RunFinished
from engine.runtime.updates import StageProgress
from engine.runtime.updates import Update

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
