"""The engine: validate pipeline specs, run them as detached processes, follow them.

This package's public API is torch-free; only `engine.stages.*` modules (run
inside worker processes) import torch, transformers, trl, peft or accelerate.

Names are loaded from their modules on first use (PEP 562): `from engine
import Engine` does not import the spec models (pydantic) that `load_spec`
needs, which keeps the console's start-up short.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.errors import (
    EngineError,
    InvalidRunState,
    RunNotFound,
    SpecError,
    StageCancelled,
    StageFailed,
    UserInputError,
)

if TYPE_CHECKING:
    from engine.runtime.annotation import Annotation, AnnotationSession
    from engine.runtime.api import Engine, RunDetail, Series
    from engine.runtime.updates import LifecycleEvent, LogEmitted, MetricsLogged, RunFinished, StageProgress, Update
    from engine.spec import EXAMPLE_SPEC, PipelineSpec, load_spec, parse_spec

#: name -> the module that defines it, imported when the name is first asked for
_LAZY = {
    **dict.fromkeys(("Annotation", "AnnotationSession"), "engine.runtime.annotation"),
    **dict.fromkeys(("Engine", "RunDetail", "Series"), "engine.runtime.api"),
    **dict.fromkeys(("LifecycleEvent", "LogEmitted", "MetricsLogged", "RunFinished", "StageProgress", "Update"),
                    "engine.runtime.updates"),
    **dict.fromkeys(("EXAMPLE_SPEC", "PipelineSpec", "load_spec", "parse_spec"), "engine.spec"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "EXAMPLE_SPEC",
    "Annotation",
    "AnnotationSession",
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
