"""Pipeline specs: the torch-free description of what a run does.

`load_spec(path)` reads a TOML pipeline and returns a validated
`PipelineSpec` (or raises `engine.errors.SpecError` listing every problem);
`EXAMPLE_SPEC` is the commented example `rlhf init` writes.
"""

from engine.spec.pipeline import PipelineSpec, load_spec, parse_spec, stage_spec_from_dict
from engine.spec.stages import PLANNED_KINDS, STAGE_KINDS, PretrainSpec, StageSpec
from engine.spec.template import EXAMPLE_SPEC

__all__ = [
    "EXAMPLE_SPEC",
    "PLANNED_KINDS",
    "STAGE_KINDS",
    "PipelineSpec",
    "PretrainSpec",
    "StageSpec",
    "load_spec",
    "parse_spec",
    "stage_spec_from_dict",
]
