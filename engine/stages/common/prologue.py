"""The first lines of every stage's `run(ctx)`: its spec, quiet libraries, its device.

    spec, hardware = begin(ctx, SFTSpec)

checks that the worker handed the stage the spec of its kind, silences the
libraries' progress bars and chatter (the log goes to the store), and picks
the device and precision the spec asks for (engine/stages/common/setup.py).
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import warnings
from typing import TypeVar

from engine.spec.fields import StageSpec
from engine.stages.common.context import StageContext

SpecT = TypeVar("SpecT", bound=StageSpec)


def stage_spec(ctx: StageContext, spec_class: type[SpecT], *, kind: str | None = None) -> SpecT:
    """The stage's spec, which must be a `spec_class` of `kind` (by default the class's own kind)."""
    kind = kind if kind is not None else spec_class.model_fields["kind"].default
    spec = ctx.spec
    if not isinstance(spec, spec_class) or spec.kind != kind:
        raise TypeError(f"the {kind} stage got a {type(spec).__name__}")
    return spec


def begin(ctx: StageContext, spec_class: type[SpecT], *, kind: str | None = None) -> tuple[SpecT, runtime.Runtime]:
    """The stage's spec and the device and precision it runs with, libraries silenced."""
    spec = stage_spec(ctx, spec_class, kind=kind)
    runtime.silence_libraries()
    # peft asks the model a question transformers renamed; the answer is the same.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    return spec, runtime.choose_runtime(spec.device, spec.precision)
