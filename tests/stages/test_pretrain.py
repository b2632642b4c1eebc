"""The pretrain stage end to end, against a real store: learning, saving,
cancelling, resuming exactly, and two processes under accelerate."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.errors import StageCancelled
from engine.stages.common.context import StageContext
from engine.stages.pretrain import stage as pretrain
from engine.stages.pretrain.spec import PretrainSpec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def tiny_spec(**overrides) -> PretrainSpec:
    """llama-1m on 64-token blocks: a few seconds of training on 2 CPU cores."""
    fields = dict(
        from_="builtin:llama-1m", block_size=64, batch_size=8, max_steps=30,
        learning_rate=3e-3, warmup_steps=3, eval_every=10, eval_batches=4,
        save_every=10, keep_checkpoints=2, max_documents=1500,
    )
    fields.update(overrides)
    return PretrainSpec(**fields)


def series(workspace, ctx: StageContext, key: str) -> list[tuple[int, float]]:
    return [(int(p.step), p.value) for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def test_pretraining_learns_and_saves_a_plain_hf_folder(make_context, workspace) -> None:
    ctx = make_context(tiny_spec())
    pretrain.run(ctx)

    evals = series(workspace, ctx, "eval/loss")
    assert [step for step, _ in evals] == [0, 10, 20, 30]  # 0: before the first step
    assert evals[0][1] == pytest.approx(8.3, abs=0.3)  # about ln(4096): a random init
    assert evals[-1][1] < evals[1][1] - 0.3, evals
    assert len(series(workspace, ctx, "eval/perplexity")) == 4
    for key in ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second"):
        assert [step for step, _ in series(workspace, ctx, key)] == list(range(1, 31)), key

    stage = workspace.store.get_stage(stage_id=ctx.stage_id)
    assert (stage.step, stage.total) == (30, 30)
    assert stage.device == "cpu (fp32)"
    assert stage.config["max_steps"] == 30 and stage.config["world_size"] == 1
    assert stage.config["model"]["parameters"] > 500_000

    checkpoints = workspace.store.list_checkpoints(stage_id=ctx.stage_id)
    assert [(c.step, c.is_final) for c in checkpoints] == [(20, False), (30, False), (30, True)]
    assert sorted(p.name for p in ctx.checkpoints_dir.iterdir()) == ["checkpoint-20", "checkpoint-30"]

    final = ctx.final_dir
    assert Path(checkpoints[-1].path) == final
    names = {p.name for p in final.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))], names

    # Plain transformers loads it: no project code needed to use the output.
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert model.config.use_cache
    inputs = tok("Return the", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5 or tok.eos_token_id in out[0].tolist()

    # Continued pretraining from that folder starts where it ended, not from
    # a random init (whose loss is about ln(4096) = 8.3), with its tokenizer.
    continued = make_context(tiny_spec(from_=f"path:{final}", max_steps=3, eval_every=3, save_every=3))
    pretrain.run(continued)
    first_loss = series(workspace, continued, "train/loss")[0][1]
    assert first_loss < series(workspace, ctx, "train/loss")[0][1] - 0.5
    config = workspace.store.get_stage(stage_id=continued.stage_id).config
    assert config["tokenizer"]["source"] == f"path:{final}"


def test_cancel_then_resume_continues_exactly(make_context, workspace) -> None:
    spec = tiny_spec(max_steps=14, eval_every=100, save_every=100, warmup_steps=2)

    reference = make_context(spec)
    pretrain.run(reference)

    first = make_context(spec, stop_at_step=7)
    with pytest.raises(StageCancelled):
        pretrain.run(first)
    saved = workspace.store.list_checkpoints(stage_id=first.stage_id)
    assert [(c.step, c.is_final) for c in saved] == [(7, False)]
    checkpoint = Path(saved[0].path)
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 7
    assert not first.final_dir.exists()

    # The engine resumes with a fresh context for the same stage.
    resumed = make_context(spec, like=first, resume_from=checkpoint)
    pretrain.run(resumed)
    assert workspace.store.get_stage(stage_id=first.stage_id).step == 14
    last = json.loads((first.checkpoints_dir / "checkpoint-14" / "trainer_state.json").read_text())
    assert last["global_step"] == 14

    # Scheduler restored: the learning rate continues its curve; optimizer,
    # RNG and data position restored: so does the loss.
    for key in ("train/learning_rate", "train/loss"):
        expected = series(workspace, reference, key)
        got = series(workspace, first, key)
        assert [s for s, _ in got] == list(range(1, 15)), key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-4), key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(ctx: StageContext, spec: PretrainSpec, *extra: str) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2`: on a CPU machine the
    one way to get two processes talking over gloo (`--cpu` starts one)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch",
         "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()),
         str(Path(__file__).with_name("pretrain_worker.py")),
         str(ctx.output_dir.parents[2]), str(ctx.run_id), str(ctx.stage_id), str(ctx.cache_dir),
         spec.model_dump_json(by_alias=True), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


two_cpu_processes = pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path")


@two_cpu_processes
def test_two_processes_under_accelerate(make_context, workspace) -> None:
    spec = tiny_spec(max_steps=8, eval_every=4, save_every=4, max_documents=400)
    ctx = make_context(spec)  # creates the run; the workers open the same store
    done = launch_two_processes(ctx, spec)
    assert done.returncode == 0, done.stderr[-3000:]
    # Only the main process reported: one point per step, not two.
    assert [s for s, _ in series(workspace, ctx, "train/loss")] == list(range(1, 9))
    assert [s for s, _ in series(workspace, ctx, "eval/loss")] == [0, 4, 8]
    stage = workspace.store.get_stage(stage_id=ctx.stage_id)
    assert "2 processes" in stage.device
    assert stage.config["world_size"] == 2 and stage.config["per_device_train_batch_size"] == 8
    checkpoints = workspace.store.list_checkpoints(stage_id=ctx.stage_id)
    assert [(c.step, c.is_final) for c in checkpoints] == [(4, False), (8, False), (8, True)]
    assert (ctx.final_dir / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(ctx.final_dir)


@two_cpu_processes
def test_two_processes_stop_together_when_only_one_sees_the_cancel(make_context, workspace) -> None:
    spec = tiny_spec(max_steps=50, eval_every=100, save_every=100, max_documents=400)
    ctx = make_context(spec)
    # Rank 1 (not the main process) sees the cancel at step 3; rank 0 never
    # does. Without agreeing, rank 0 would wait forever in the next all-reduce.
    done = launch_two_processes(ctx, spec, "3", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (ctx.output_dir / "cancelled-rank0").exists() and (ctx.output_dir / "cancelled-rank1").exists()
    checkpoints = workspace.store.list_checkpoints(stage_id=ctx.stage_id)
    assert [(c.step, c.is_final) for c in checkpoints] == [(3, False)]
    assert (ctx.checkpoints_dir / "checkpoint-3" / "trainer_state.json").is_file()
    assert not ctx.final_dir.exists()


@pytest.mark.slow
def test_resuming_from_the_last_checkpoint_trains_no_step_past_the_end(make_context, workspace) -> None:
    # Killed after checkpoint-max_steps was whole but before success was recorded (issue 14,
    # found by bench_faults): the resume used to run step max_steps + 1 on a schedule past its end.
    spec = tiny_spec(max_steps=4, save_every=2, eval_every=100)
    first = make_context(spec)
    pretrain.run(first)
    last = first.checkpoints_dir / "checkpoint-4"
    weights = (first.final_dir / "model.safetensors").read_bytes()
    shutil.rmtree(first.final_dir)  # as if killed before the final save

    resumed = make_context(spec, like=first, resume_from=last)
    pretrain.run(resumed)
    assert not (first.checkpoints_dir / "checkpoint-5").exists()
    assert [s for s, _ in series(workspace, first, "train/loss")] == [1, 2, 3, 4]
    assert (first.final_dir / "model.safetensors").read_bytes() == weights  # the step-4 weights, unchanged
