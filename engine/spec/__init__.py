"""Pipeline specs: the torch-free description of what a run does.

`load_spec(path)` reads a TOML pipeline and returns a validated
`PipelineSpec` (or raises `engine.errors.SpecError` listing every problem);
`EXAMPLE_SPEC` is the commented example `rlhf init` writes.
"""

from engine.spec.pipeline import PipelineSpec, load_spec, parse_spec, stage_spec_from_dict
from engine.spec.fields import StageSpec
from engine.spec.template import EXAMPLE_SPEC
from engine.stages.pretrain.spec import PretrainSpec


def __getattr__(name: str) -> object:
    # The registry of kinds imports every kind's spec, which imports
    # engine.spec.fields and so this package: its names are read on first use.
    if name in ("STAGE_KINDS", "PLANNED_KINDS"):
        from engine.stages import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
