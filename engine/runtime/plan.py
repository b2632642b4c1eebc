"""What a validated pipeline would do, told without doing it (`rlhf validate`).

`plan_pipeline(spec)` lays out a `PipelineSpec` the way the run process would
take it: the stages in execution order, what each one starts from and reads
(its reference fields, resolved), and where it would run on this machine:
the device slots it would wait for (engine/runtime/devices.py) and how it
would be launched (engine/runtime/launcher.py).

Whether this machine can run a stage (CUDA for FSDP, the deepspeed package,
enough GPUs) is checked only when the stage starts, because a spec written
on a laptop for a GPU machine must validate on the laptop. The plan says what
would fail here as notes, so `rlhf validate` can warn without refusing.

Reads nothing but the spec and the machine; writes nothing; opens no workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import StageFailed
from engine.runtime.devices import devices_for, visible_gpus
from engine.runtime.launcher import LaunchSettings, accelerate_launch
from engine.stages.registry import stage_kind

if TYPE_CHECKING:
    from engine.spec.pipeline import PipelineSpec


@dataclass(frozen=True)
class StagePlan:
    name: str
    kind: str
    #: stages whose output it needs (they run before it)
    after: tuple[str, ...]
    #: reference field -> canonical reference(s) (`stage:pretrain`, `builtin:llama-4m`, `path:/..`, `hub:org/name`)
    sources: dict[str, str | list[str]]
    #: the spec's `device` as written, and what it comes to here: "cpu", "cuda" or "none" (waits for no slot)
    device: str
    device_here: str
    #: device slots it would lease at once (GPUs; 1 for the whole CPU)
    slots: int
    processes: int
    machines: int
    #: None: one plain worker process; else how accelerate shares the work
    strategy: str | None
    accelerate_config: str | None
    #: what would fail when the stage starts on this machine
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "after": list(self.after), "sources": dict(self.sources),
            "device": self.device, "device_here": self.device_here, "slots": self.slots,
            "processes": self.processes, "machines": self.machines, "strategy": self.strategy,
            "accelerate_config": self.accelerate_config, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class PipelinePlan:
    name: str
    description: str | None
    source: str
    stages: tuple[StagePlan, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "source": self.source,
                "stages": [stage.to_json() for stage in self.stages]}


def plan_pipeline(spec: PipelineSpec) -> PipelinePlan:
    """The stages of a validated spec in the order they would run, with where each would run here."""
    return PipelinePlan(
        name=spec.name, description=spec.description, source=spec.source,
        stages=tuple(_stage_plan(spec, name) for name in spec.stages),
    )


def _stage_plan(spec: PipelineSpec, name: str) -> StagePlan:
    stage = spec.stages[name]
    config = stage.model_dump(by_alias=True, mode="json")
    sources = {alias: config[alias] for alias in type(stage).reference_fields if config.get(alias) is not None}
    launch = LaunchSettings.from_spec(config)
    registered = stage_kind(stage.kind)
    notes: list[str] = []
    if registered is not None and not registered.spec.needs_device:
        device_here, slots = "none", 0
    else:
        device_here, slots = devices_for(stage.device, stage.processes)
        notes += _slot_notes(device_here, slots)
    if launch.through_accelerate:
        try:
            accelerate_launch(launch, device_here if device_here != "none" else "cpu")
        except StageFailed as exc:
            notes.append(f"it would fail when it starts here: {exc}")
    # A config file decides the strategy itself (the launcher reads it when the stage starts).
    shared = launch.through_accelerate and launch.accelerate_config is None
    return StagePlan(
        name=name, kind=stage.kind, after=tuple(spec.dependencies.get(name, ())), sources=sources,
        device=stage.device, device_here=device_here, slots=slots, processes=launch.processes,
        machines=launch.machines, strategy=launch.strategy if shared else None,
        accelerate_config=launch.accelerate_config, notes=tuple(notes),
    )


def _slot_notes(device: str, slots: int) -> list[str]:
    # The run process leases its slots from this machine's GPUs (devices.try_acquire), and fails
    # the run when it asks for more than there are: nothing would free them.
    gpus = len(visible_gpus()) if device == "cuda" else slots
    if slots <= gpus:
        return []
    visible = f"{gpus} {'is' if gpus == 1 else 'are'}" if gpus else "none is"
    return [f"it would fail when it starts here: it needs {slots} CUDA GPU{'s' if slots != 1 else ''} and {visible} "
            "visible (nvidia-smi, CUDA_VISIBLE_DEVICES, RLHF_DEVICES)"]


__all__ = ["PipelinePlan", "StagePlan", "plan_pipeline"]
