"""The one sharding strategy that really runs on this CPU: DeepSpeed ZeRO (its
CPU accelerator, over gloo), through the engine's own launch path
(worker_command -> accelerate launch -> the worker -> the pretrain stage).
FSDP does not: accelerate 1.16 turns it on only for GPU process groups
(tests/engine/test_launch_strategy.py checks that it is refused). deepspeed is
not a dependency: without it these are skipped.

Run with deepspeed 0.19.8 installed beside the venv (pip install --target DIR,
then PYTHONPATH=DIR): ZeRO-2 and ZeRO-3 both pass. Under ZeRO-3 final/ is
written from the weights gathered across the processes (common/saving.py,
whole_for_saving; before it, final/ held the main process's empty
placeholders), and it must equal what DeepSpeed's own zero_to_fp32 rebuilds
from the optimizer shards of the last checkpoint: an independent way to the
same weights. tests/stages/test_saving_gather.py checks the gather-then-save
path without deepspeed."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from engine.runtime.launcher import LaunchSettings, child_env, worker_command
from engine.stages.pretrain.spec import PretrainSpec
from store import NewStage, StageStatus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
]

REPO = Path(__file__).resolve().parents[2]


def run_pretrain(workspace, cache: Path, strategy: str) -> tuple[int, Path]:
    spec = PretrainSpec(
        from_="builtin:llama-1m", block_size=64, batch_size=8, max_steps=4, learning_rate=3e-3, warmup_steps=1,
        eval_every=4, eval_batches=2, save_every=4, keep_checkpoints=1, max_documents=300,
        processes=2, strategy=strategy,
    )
    run = workspace.store.create_run(
        name=strategy, spec_text="", spec={"stages": {"pretrain": spec.model_dump(by_alias=True, mode="json")}},
        spec_path=None, stages=[NewStage(name="pretrain", kind="pretrain", position=0, parent=None, config={})])
    stage_id = workspace.store.list_stages(run_id=run.id)[0].id
    command = worker_command(workspace_root=workspace.root, stage_id=stage_id, device_kind="cpu", resume_from=None,
                             launch=LaunchSettings.from_spec(spec.model_dump(by_alias=True, mode="json")))
    env = child_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                     "RLHF_CACHE_DIR": str(cache)})
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=800, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return stage_id, workspace.stage_dir(run.id, "pretrain")


def empty_tensors(weights: Path) -> list[str]:
    with safe_open(weights, "pt") as saved:
        return [name for name in saved.keys() if 0 in saved.get_slice(name).get_shape()]  # noqa: SIM118  not a dict


@pytest.mark.parametrize("strategy", ["deepspeed-zero2", "deepspeed-zero3"])
def test_pretraining_under_deepspeed_zero_on_two_cpu_processes(workspace, builtin_cache, strategy: str) -> None:
    stage_id, folder = run_pretrain(workspace, builtin_cache, strategy)
    stage = workspace.store.get_stage(stage_id=stage_id)
    assert stage.status == StageStatus.SUCCEEDED and stage.config["world_size"] == 2
    assert [int(p.step) for p in workspace.store.metric_series(stage_id=stage_id, key="train/loss")] == [1, 2, 3, 4]
    # DeepSpeed's own checkpoint layout: each process saved its shard of the optimizer state.
    shards = sorted(p.name for p in (folder / "checkpoints" / "checkpoint-4" / "global_step4").iterdir()
                    if p.name.endswith("optim_states.pt"))
    assert len(shards) == 2, shards
    # final/ is whole weights that plain transformers loads: the trained ones, as DeepSpeed
    # rebuilds them from the last checkpoint's fp32 optimizer shards (final/ and checkpoint-4 are step 4).
    assert empty_tensors(folder / "final" / "model.safetensors") == []
    final = AutoModelForCausalLM.from_pretrained(folder / "final").state_dict()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    rebuilt = get_fp32_state_dict_from_zero_checkpoint(str(folder / "checkpoints" / "checkpoint-4"), tag="global_step4")
    assert sorted(final) == sorted(rebuilt)
    different = [name for name, tensor in rebuilt.items() if not torch.equal(final[name], tensor)]
    assert different == [], different
