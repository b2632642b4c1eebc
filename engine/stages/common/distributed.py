"""Full weights for generation, whatever shards them.

Under FSDP or DeepSpeed ZeRO-3 each process holds a shard of every weight,
and a forward pass all-gathers the shards it needs and frees them after. A
training step is one forward per process, so that works; generation is not:
a process whose responses all ended stops calling forward while the others
go on, and the next all-gather waits forever. And code that calls the inner
model directly (the module the stage loaded, not the one accelerate wrapped)
would read the shards as if they were weights.

`full_weights_for_generation(model)` gathers every weight once, keeps it
whole for the body of the `with` (under FSDP2 and ZeRO-3 forward passes then
need no collective, so processes may generate different numbers of tokens,
or one process alone may generate; under FSDP1 every process must still
generate), and shards again on leaving. Every process must enter it, at the
same point: gathering is collective. Under DDP, or in one process, it does
nothing.

Checked on the CPU over gloo (tests/stages/test_distributed_generation.py):
FSDP2 and FSDP1 with torch alone, ZeRO-3 with DeepSpeed's CPU accelerator.

What shards the model is read from the model itself (torch's FSDP2 and FSDP1
modules, DeepSpeed's ZeRO-3 engine), so the same code serves a stage built on
accelerate and one built on torch alone.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1


@contextmanager
def full_weights_for_generation(model: torch.nn.Module) -> Iterator[None]:
    """Inside, every weight of `model` (what `accelerator.prepare` returned,
    wrapped or not) is whole on every process, and the module the stage
    loaded computes with it; outside, sharded as before."""
    fsdp2 = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if fsdp2:
        with _fsdp2_unsharded(fsdp2), _generating_alone(model):
            yield
    elif any(isinstance(m, FSDP1) for m in model.modules()):
        # FSDP1's wrapped blocks still talk to each other in a forward inside this,
        # so under FSDP1 every process must generate (measured: one alone hangs).
        with FSDP1.summon_full_params(model, writeback=False, recurse=True):
            yield
    elif _zero3_engine(model):
        with _zero3_gathered(model):
            yield
    else:  # DDP or one process: every process already holds the whole model
        yield


@contextmanager
def _fsdp2_unsharded(modules: Sequence[FSDPModule]) -> Iterator[None]:
    """All-gather every FSDP2 module's parameters and keep them so through
    forward passes. Each module's own setting says whether it frees them after
    a forward; it is set to keep them, then put back as it was."""
    kept = [_reshards_after_forward(m) for m in modules]
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()  # collective: every process, same modules, same order
    try:
        yield
    finally:
        for module, reshards in zip(modules, kept):
            module.reshard()
            module.set_reshard_after_forward(reshards, recurse=False)


#: the attribute torch sets on every module FSDP manages (and transformers reads)
_FSDP_MARK = "_is_fsdp_managed_module"


@contextmanager
def _generating_alone(model: torch.nn.Module) -> Iterator[None]:
    """transformers' `generate` keeps every process stepping together (an
    all-reduce per token, `synced_gpus`) when torch marks the model as
    FSDP-managed: one process generating alone (the eval answers) would wait
    for the others forever. With the weights whole no process needs the
    others, so the mark is lifted for the duration and put back after."""
    marked = [m for m in model.modules() if getattr(m, _FSDP_MARK, False)]
    for module in marked:
        setattr(module, _FSDP_MARK, False)  # restored below
    try:
        yield
    finally:
        for module in marked:
            setattr(module, _FSDP_MARK, True)


def _reshards_after_forward(module: FSDPModule) -> bool:
    # torch has a setter for this and no getter; the setter's own data is read back.
    state = module._get_fsdp_state()  # noqa: SLF001  no public getter (torch 2.13)
    groups = state._fsdp_param_groups  # noqa: SLF001
    return any(group.post_forward_mesh_info is not None for group in groups)


def _zero3_engine(model: torch.nn.Module) -> bool:
    """A DeepSpeed engine partitioning its parameters with ZeRO stage 3."""
    deepspeed = sys.modules.get("deepspeed")  # never imported: nothing here can be an engine of it
    return (deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine)
            and model.zero_optimization_stage() == 3)


@contextmanager
def _zero3_gathered(engine: torch.nn.Module) -> Iterator[None]:
    # Imported by name: deepspeed is optional, and ships no type information.
    stage3 = importlib.import_module("deepspeed.runtime.zero.stage3")
    unwrap_model_for_generation = getattr(stage3, "unwrap_model_for_generation", None)
    if unwrap_model_for_generation is None:  # older DeepSpeed: gathered, with the hooks left on
        deepspeed = importlib.import_module("deepspeed")
        with deepspeed.zero.GatheredParameters(list(engine.parameters()), modifier_rank=None):
            yield
        return
    # DeepSpeed's own: gathers once and takes ZeRO-3's per-module fetch/release
    # hooks off for the duration (with them, each forward would gather again).
    with unwrap_model_for_generation(engine), _start_of_forward_hook_off(engine):
        yield


@contextmanager
def _start_of_forward_hook_off(engine: Any) -> Iterator[None]:
    """The one ZeRO-3 hook `unwrap_model_for_generation` leaves on: at each
    forward of the model it checks with a broadcast that every process is at
    the same step, so a process generating alone would wait forever. Taken off
    for the duration and put back first in line, where DeepSpeed put it.
    (DeepSpeed 0.19's attributes; without them the hook stays.)"""
    offload = getattr(engine.optimizer, "parameter_offload", engine.optimizer)
    handle = getattr(offload, "fwd_pre_hook", None)
    module = getattr(offload, "module", None)
    if handle is None or not isinstance(module, torch.nn.Module) or handle.id not in module._forward_pre_hooks:  # noqa: SLF001
        yield
        return
    hook = module._forward_pre_hooks[handle.id]  # noqa: SLF001  torch keeps a hook's function nowhere else
    handle.remove()
    try:
        yield
    finally:
        offload.fwd_pre_hook = module.register_forward_pre_hook(hook, prepend=True)
