"""A torch-free stage for testing the engine's scheduling, cancel, crash and resume.

Registered as kind "fake" through the RLHF_STAGE_PLUGINS hook (loaded by
engine.stages.registry.load_stage_plugins), so the worker
subprocesses find it too. Its checkpoints mimic the Trainer's layout
(`checkpoints/checkpoint-STEP/` with weights, optimizer and scheduler state,
and `trainer_state.json` last), which is what the engine checks of them.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import Field

from engine.errors import StageCancelled
from engine.spec.fields import StageSpec
from engine.stages.common.context import StageContext
from engine.stages.registry import register_stage


class FakeSpec(StageSpec):
    kind: Literal["fake"] = "fake"
    steps: int = Field(10, ge=1)
    step_seconds: float = 0.02
    save_every: int = 5
    fail_at: int | None = None
    say: str | None = None  # printed once, for tests of how logs are shown
    fill_disk_at: int | None = None  # at this step, write into the stage folder until the disk is full
    stop_seconds: float = 0.0  # on a stop, this long before the checkpoint is saved (a big model's save)


def _save(ctx: StageContext, step: int) -> None:
    folder = ctx.checkpoints_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    # A whole checkpoint as the engine checks one (engine/runtime/checkpoints.py): weights (an empty
    # safetensors file: a header and no tensors), optimizer and scheduler state, trainer_state.json last.
    header = b"{}"
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    (folder / "optimizer.pt").write_bytes(b"fake optimizer state")
    (folder / "scheduler.pt").write_bytes(b"fake scheduler state")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    ctx.checkpoint_saved(step, folder)


def run(ctx: StageContext) -> None:
    spec: FakeSpec = ctx.spec  # type: ignore[assignment]
    step = 0
    if spec.say is not None:
        print(spec.say, flush=True)
    if ctx.resume_from is not None:
        step = json.loads((ctx.resume_from / "trainer_state.json").read_text())["global_step"]
        print(f"fake stage resuming at step {step}")
    while step < spec.steps:
        if ctx.should_stop():
            time.sleep(spec.stop_seconds)
            _save(ctx, step)
            raise StageCancelled(f"stopped at step {step}")
        time.sleep(spec.step_seconds)
        step += 1
        if step == spec.fail_at:
            raise RuntimeError(f"fake failure at step {step}")
        if step == spec.fill_disk_at:
            with (ctx.output_dir / "filler.bin").open("wb") as filler:
                while True:  # until the OSError of a full disk (ENOSPC), as a large checkpoint would meet it
                    filler.write(b"\0" * (1 << 16))
        ctx.log_metrics(step, {"train/loss": 1.0 / step})
        ctx.set_progress(step, spec.steps)
        print(f"fake step {step}", flush=True)
        if step % spec.save_every == 0:
            _save(ctx, step)
    ctx.final_dir.mkdir(parents=True, exist_ok=True)
    (ctx.final_dir / "done.txt").write_text(str(step))
    ctx.checkpoint_saved(step, ctx.final_dir, is_final=True)


register_stage("fake", FakeSpec, __name__)
