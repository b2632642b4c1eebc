"""The stage kinds this process knows: kind -> its spec class and the module of its run.

One table for the pipeline loader (which spec validates a `[stages.NAME]`
table), the supervisor (whether a kind waits for a device) and the worker
(which module's `run(ctx)` to import). Importing it imports every kind's
spec.py, which are torch-free; the run modules are named, not imported.

Plugins add kinds with `register_stage`. The modules named in
RLHF_STAGE_PLUGINS (comma-separated) are imported by `load_stage_plugins()`,
which the pipeline loader, the supervisor and the worker call before they
look a kind up (a worker also imports plugins that register no kind, for
what they install); reading `STAGE_KINDS` loads them too. Nothing is
imported as a side effect of importing this module.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from engine.spec.fields import StageSpec
from engine.stages.cpo.spec import CPOSpec
from engine.stages.dpo.spec import DPOSpec
from engine.stages.grpo.spec import GRPOSpec
from engine.stages.kto.spec import KTOSpec
from engine.stages.online_dpo.spec import OnlineDPOSpec
from engine.stages.orpo.spec import ORPOSpec
from engine.stages.ppo.spec import PPOSpec
from engine.stages.pretrain.spec import PretrainSpec
from engine.stages.rank.spec import RankSpec
from engine.stages.rejection.spec import RejectionSpec
from engine.stages.reward.spec import RewardSpec
from engine.stages.rloo.spec import RLOOSpec
from engine.stages.sample.spec import SampleSpec
from engine.stages.score.spec import ScoreSpec
from engine.stages.sft.spec import SFTSpec

#: the environment variable naming plugin modules, comma-separated
PLUGINS_VARIABLE = "RLHF_STAGE_PLUGINS"


@dataclass(frozen=True)
class StageKind:
    """A kind of stage: the spec class of its TOML table and the module holding its `run(ctx)`."""

    spec: type[StageSpec]
    module: str  # dotted, imported only in a worker process


def _builtin(spec: type[StageSpec]) -> StageKind:
    kind = spec.model_fields["kind"].default
    return StageKind(spec, f"engine.stages.{kind}.stage")


_KINDS: dict[str, StageKind] = {
    spec.model_fields["kind"].default: _builtin(spec)
    for spec in (PretrainSpec, SFTSpec, SampleSpec, RankSpec, RewardSpec, ScoreSpec, RejectionSpec, DPOSpec, KTOSpec,
                 ORPOSpec, CPOSpec, OnlineDPOSpec, PPOSpec, RLOOSpec, GRPOSpec)
}

#: kinds announced for later versions: rejected with a clear message, not "unknown"
PLANNED_KINDS: tuple[str, ...] = ()

_plugins_loaded: set[str] = set()


def register_stage(kind: str, spec: type[StageSpec], module: str) -> None:
    """Add (or replace) a stage kind: its spec class and the dotted module of its `run(ctx)`."""
    _KINDS[kind] = StageKind(spec, module)


def unregister_stage(kind: str) -> None:
    """Forget a kind (tests that need the built-in kinds alone)."""
    _KINDS.pop(kind, None)


def load_stage_plugins() -> None:
    """Import the modules RLHF_STAGE_PLUGINS names (each registers its kinds
    when imported); each module once per process, so calling this again is cheap."""
    for name in os.environ.get(PLUGINS_VARIABLE, "").split(","):
        name = name.strip()
        if name and name not in _plugins_loaded:
            importlib.import_module(name)
            _plugins_loaded.add(name)


def stage_kinds() -> dict[str, StageKind]:
    """Every kind known now, plugins loaded, in registration order (built-ins first)."""
    load_stage_plugins()
    return dict(_KINDS)


def stage_kind(kind: str) -> StageKind | None:
    """The kind named `kind`, plugins loaded; None when nobody registered it."""
    load_stage_plugins()
    return _KINDS.get(kind)


def is_builtin(kind: str) -> bool:
    """Whether `kind` is one this package defines (not a plugin's)."""
    entry = _KINDS.get(kind)
    return entry is not None and entry.module.startswith("engine.stages.")


class _SpecClasses(Mapping[str, type[StageSpec]]):
    """kind -> spec class, read live from the registry (plugins loaded on first read)."""

    def __getitem__(self, kind: str) -> type[StageSpec]:
        entry = stage_kind(kind)
        if entry is None:
            raise KeyError(kind)
        return entry.spec

    def __iter__(self) -> Iterator[str]:
        return iter(stage_kinds())

    def __len__(self) -> int:
        return len(stage_kinds())


#: every stage kind's spec class by the `kind` key of its table (a read-only view)
STAGE_KINDS: Mapping[str, type[StageSpec]] = _SpecClasses()
