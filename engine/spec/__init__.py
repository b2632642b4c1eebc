"""Pipeline specs: the torch-free description of what a run does.

`load_spec(path)` reads a TOML pipeline and returns a validated
`PipelineSpec` (or raises `engine.errors.SpecError` listing every problem);
`EXAMPLE_SPEC` is the commented example `rlhf init` writes.

The names below are imported on first use: each kind's spec
(engine/stages/KIND/spec.py) imports engine.spec.fields, which runs this
file first, so importing the loader or the registry here would be circular.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EXAMPLE_SPEC": "engine.spec.template",
    "PLANNED_KINDS": "engine.stages.registry",
    "STAGE_KINDS": "engine.stages.registry",
    "PipelineSpec": "engine.spec.pipeline",
    "PretrainSpec": "engine.stages.pretrain.spec",
    "StageSpec": "engine.spec.fields",
    "load_spec": "engine.spec.pipeline",
    "parse_spec": "engine.spec.pipeline",
    "stage_spec_from_dict": "engine.spec.pipeline",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
