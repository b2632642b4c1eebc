"""The sft stage end to end, against a real store: it learns the demo task
(judged on held-out prompts), stores its answers to the eval prompts while it
trains, saves LoRA adapters that reload and merge to the same logits, and
resumes a cancelled run exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.demo import task as demo_task
from engine.errors import StageCancelled
from engine.spec.fields import LoraSpec
from engine.stages.common import setup as runtime
from engine.stages.common.context import Source, StageContext
from engine.stages.common.generation import SamplingSettings, generate
from engine.stages.common.models import load_model_for_training
from engine.stages.common.saving import save_final
from engine.stages.common.tokenizer import load_tokenizer
from engine.stages.sft import stage as sft
from engine.stages.sft.spec import SFTSpec

pytestmark = pytest.mark.slow


def series(workspace, ctx: StageContext, key: str) -> list[tuple[int, float]]:
    return [(int(p.step), p.value) for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def held_out_score(model, tokenizer, n: int = 70) -> float:
    """Mean judge score on the first n held-out demo prompts, greedy."""
    prompts = demo_task.demo_prompts(n)
    # 24 new tokens hold the longest answer ("e l p p a" or "frog frog frog") with room to spare.
    answers = generate(model, tokenizer, [p["prompt"] for p in prompts],
                       SamplingSettings(temperature=0, max_new_tokens=24))
    return sum(demo_task.judge_score(p["prompt"], a.text) for p, [a] in zip(prompts, answers)) / n


def test_sft_learns_the_demo_task_and_stores_its_answers(make_context, workspace, shared_cache) -> None:
    # llama-1m from its random init (the parent), 150 steps: 25-50 s on 2 busy cores.
    # Measured: the judge's mean on the first 70 held-out prompts goes from 0.00 to 0.41
    # (0.38 on 140; 400 steps of llama-4m reach 1.00 from a random init, 0.66 from a
    # 300-step pretrained parent).
    spec = SFTSpec(from_="builtin:llama-1m", data="builtin:demo-instructions",
                   learning_rate=2e-3, max_steps=150, eval_every=50,
                   sample_every=50, save_every=50, eval_prompt_count=14, eval_prompts="builtin:demo-prompts",
                   eval_judge="demo")
    ctx = make_context(spec)
    sft.run(ctx)

    evals = series(workspace, ctx, "eval/loss")
    assert [step for step, _ in evals] == [0, 50, 100, 150]
    assert evals[-1][1] < evals[0][1] - 4  # from ~8.3 (ln 4096) to ~1.4
    judged = series(workspace, ctx, "eval/judge_score")
    assert [step for step, _ in judged] == [0, 50, 100, 150]
    assert judged[0][1] < 0.05 and judged[-1][1] > 0.2, judged
    assert len(series(workspace, ctx, "eval/judge_exact")) == 4

    # Answers to the same 14 held-out prompts, at every sampled step, with the
    # checkpoint holding the weights that wrote them.
    prompts = [p["prompt"] for p in demo_task.demo_prompts(14)]
    assert workspace.store.sample_steps(stage_id=ctx.stage_id) == [0, 50, 100, 150]
    for step in (0, 50, 150):
        samples = workspace.store.list_samples(stage_id=ctx.stage_id, step=step)
        assert [s.prompt for s in samples] == prompts
        assert all(0 <= s.meta["score"] <= 1 and "tokens" in s.meta for s in samples)
        expected = "builtin:llama-1m" if step == 0 else str(ctx.checkpoints_dir / f"checkpoint-{step}")
        assert {s.checkpoint for s in samples} == {expected}
    stored = workspace.store.get_prompts(workspace.store.add_prompts([{"text": prompts[0]}]))
    assert stored[0].reference == demo_task.parse_task(prompts[0]).reference

    stage = workspace.store.get_stage(stage_id=ctx.stage_id)
    assert stage.device == "cpu (fp32)"
    config = stage.config
    assert config["activation_checkpointing"] is False and config["bf16"] is False
    assert config["data"]["format"] == "prompt_completion" and config["data"]["loss_on"] == "completions"
    assert config["eval_prompts"] == {"source": "builtin:demo-prompts", "count": 14, "judge": "demo", "judged": 14,
                                      "sampling": SamplingSettings(temperature=0.0, max_new_tokens=32).to_dict()}

    # The final folder loads with plain transformers and answers clearly better
    # than its parent (the same random init) on 70 held-out prompts.
    model = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    tokenizer = AutoTokenizer.from_pretrained(ctx.final_dir)
    parent = load_model_for_training(Source("builtin", "llama-1m"), tokenizer, seed=spec.seed)
    before, after = held_out_score(parent, tokenizer), held_out_score(model, tokenizer)
    assert before < 0.05 and after > 0.25, (before, after)


def save_parent(folder: Path, cache: Path) -> Path:
    """A plain model folder to fine-tune: llama-1m's random init and bpe-4k."""
    tokenizer = load_tokenizer(Source("builtin", "bpe-4k"), cache)
    load_model_for_training(Source("builtin", "llama-1m"), tokenizer, seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_lora_save_reload_and_merge_give_the_trained_logits(make_context, tmp_path, shared_cache) -> None:
    parent = save_parent(tmp_path / "parent", shared_cache)
    spec = SFTSpec(from_=f"path:{parent}", data="builtin:demo-instructions",
                   lora=LoraSpec(r=4, alpha=8), learning_rate=1e-2,
                   max_steps=8, batch_size=8, eval_every=100, save_every=100, eval_prompt_count=0)
    ctx = make_context(spec)
    trainer, _ = sft.build_trainer(ctx, runtime.choose_runtime("cpu"))
    trainer.train()
    tokenizer = trainer.processing_class
    trained = trainer.model.eval()
    # Only adapter weights were trained: 4 x (hidden + out) per adapted linear layer.
    assert all("lora_" in name for name, p in trained.named_parameters() if p.requires_grad)

    batch = tokenizer(["What is 3 + 5?", "Say dog 3 times."], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = trained(**batch).logits
        base = AutoModelForCausalLM.from_pretrained(parent).eval()
        assert (expected - base(**batch).logits).abs().max() > 1e-2  # the adapter changed the model
        save_final(trained, tokenizer, ctx.final_dir, base=str(parent))

        from peft import PeftModel

        # The adapter alone, reloaded onto the parent: the same weights, the same logits.
        reloaded = PeftModel.from_pretrained(base, str(ctx.final_dir / "adapter")).eval()
        assert torch.allclose(reloaded(**batch).logits, expected, rtol=0, atol=1e-5)
        # The merged model in final/ (plain transformers, no peft): W + (alpha/r) B A is
        # computed once instead of per token, which moves fp32 logits by rounding only.
        merged = AutoModelForCausalLM.from_pretrained(ctx.final_dir).eval()
        assert torch.allclose(merged(**batch).logits, expected, rtol=0, atol=1e-4)
        assert not (ctx.final_dir / "adapter_config.json").exists()  # final/ is a plain model
        assert json.loads((ctx.final_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_cancel_then_resume_a_lora_run_continues_exactly(make_context, workspace, tmp_path, shared_cache) -> None:
    parent = save_parent(tmp_path / "parent", shared_cache)
    spec = SFTSpec(from_=f"path:{parent}", data="builtin:demo-instructions",
                   lora=LoraSpec(r=4, alpha=8), learning_rate=5e-3, max_steps=12,
                   batch_size=8, warmup_steps=2, eval_every=100, save_every=100, sample_every=4,
                   eval_prompt_count=3, max_examples=400)

    reference = make_context(spec)
    sft.run(reference)

    first = make_context(spec, stop_at_step=6)
    with pytest.raises(StageCancelled):
        sft.run(first)
    saved = workspace.store.list_checkpoints(stage_id=first.stage_id)
    assert [(c.step, c.is_final) for c in saved] == [(6, False)]
    checkpoint = Path(saved[0].path)
    assert (checkpoint / "adapter_model.safetensors").is_file()  # adapters, not the whole model
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 6
    assert not first.final_dir.exists()

    resumed = make_context(spec, like=first, resume_from=checkpoint)
    sft.run(resumed)
    assert workspace.store.get_stage(stage_id=first.stage_id).step == 12
    assert (first.final_dir / "model.safetensors").is_file() and (first.final_dir / "adapter").is_dir()

    for key in ("train/learning_rate", "train/loss"):
        expected = series(workspace, reference, key)
        got = series(workspace, first, key)
        assert [s for s, _ in got] == list(range(1, 13)), key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-4), key
    # Answers at 0 and 4 before the cancel, 8 and 12 after the resume: none twice.
    assert workspace.store.sample_steps(stage_id=first.stage_id) == [0, 4, 8, 12]
    assert len(workspace.store.list_samples(stage_id=first.stage_id)) == 4 * 3
    assert [r.response for r in workspace.store.list_samples(stage_id=first.stage_id, step=12)] == \
        [r.response for r in workspace.store.list_samples(stage_id=reference.stage_id, step=12)]
