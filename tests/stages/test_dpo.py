"""The dpo stage against a real store, on a ~100k-parameter model: on clearly
separable pairs it widens the held-out chosen-minus-rejected log-prob margin,
its reference stays the starting model (a frozen copy, the adapters switched
off, or log-probs computed before training), it reports the documented
metrics, its final folder loads with plain transformers, and a cancelled run
resumes. Bad specs and selections that match nothing fail with one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.demo import task as demo_task
from engine.errors import SpecError, StageCancelled, UserInputError
from engine.spec import parse_spec
from engine.spec.fields import LoraSpec
from engine.stages.common.callbacks import attach_stage_callback
from engine.stages.common.context import StageContext
from engine.stages.common.preference_training import precompute_reference
from engine.stages.common.saving import save_final
from engine.stages.common.setup import Runtime, choose_runtime
from engine.stages.dpo import stage as dpo
from engine.stages.dpo.spec import DPOSpec
from tests.tiny_models import save_tiny_model

#: what every DPO stage reports, besides the train/ and eval/ loss
REWARD_METRICS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"]


def series(workspace, ctx: StageContext, key: str) -> list[tuple[int, float]]:
    return [(int(p.step), p.value) for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def separable_pairs(path: Path, count: int = 60) -> Path:
    """Demo-task prompts, each with its right answer chosen over a refusal."""
    tasks = demo_task.generate_tasks(count, seed=5)
    path.write_text("".join(json.dumps({"prompt": t.prompt, "chosen": t.reference, "rejected": "I do not know."})
                            + "\n" for t in tasks))
    return path


def small_spec(parent: Path, pairs: Path, **fields: Any) -> DPOSpec:
    """12 steps of 8 pairs; held-out evaluations at 0, 6 and 12."""
    settings: dict[str, Any] = dict(
        from_=f"path:{parent}", preferences=f"path:{pairs}", max_steps=12, batch_size=8, learning_rate=1e-3,
        warmup_steps=2, eval_every=6, save_every=100, sample_every=6, eval_prompt_count=2, eval_fraction=0.2,
        eval_prompts="builtin:demo-prompts", eval_judge="demo",
    )
    return DPOSpec(**{**settings, **fields})


def capture_trainer(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Keep the trainer `dpo.run` builds, to look at its models afterwards."""
    built: dict[str, Any] = {}
    original = dpo.build_trainer

    def build(ctx: StageContext, hardware: Runtime) -> Any:
        built["trainer"], *_ = result = original(ctx, hardware)
        return result

    monkeypatch.setattr(dpo, "build_trainer", build)
    return built


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.slow
def test_dpo_widens_the_held_out_margin_against_a_frozen_copy(
    make_context, workspace, tmp_path, monkeypatch
) -> None:
    parent = save_tiny_model(tmp_path / "parent", train_steps=5)
    pairs = separable_pairs(tmp_path / "pairs.jsonl")
    ctx = make_context(small_spec(parent, pairs, precompute_ref_log_probs="off"))
    built = capture_trainer(monkeypatch)
    dpo.run(ctx)

    # Measured: the held-out margin goes from ~47 nats (the refusal is long) to ~58.
    margins = series(workspace, ctx, "eval/logp_margin")
    assert [step for step, _ in margins] == [0, 6, 12]
    assert margins[-1][1] > margins[0][1] + 3, margins
    # TRL's eval margin is beta x the policy's gap over the reference's: 0 at step 0.
    reward_margins = series(workspace, ctx, "eval/rewards/margins")
    assert reward_margins[0][1] == pytest.approx(0, abs=1e-4)
    assert reward_margins[-1][1] == pytest.approx(0.1 * (margins[-1][1] - margins[0][1]), rel=0.05)
    assert series(workspace, ctx, "eval/rewards/accuracies")[-1][1] > 0.9

    keys = set(workspace.store.stage_metric_keys(stage_id=ctx.stage_id))
    expected = {"train/loss", "eval/loss", "eval/logp_margin", "eval/judge_score",
                *(f"train/{m}" for m in REWARD_METRICS), *(f"eval/{m}" for m in REWARD_METRICS)}
    assert expected <= keys, expected - keys
    assert "eval/perplexity" not in keys  # exp(DPO loss) means nothing
    assert workspace.store.sample_steps(stage_id=ctx.stage_id) == [0, 6, 12]
    stage = workspace.store.get_stage(stage_id=ctx.stage_id)
    assert stage.config["reference"] == "a frozen copy of the starting model"
    assert stage.config["precompute_ref_log_probs"] is False and stage.config["bf16"] is False

    # The reference is still the starting model; the policy moved away from it.
    trainer = built["trainer"]
    tokenizer = trainer.processing_class
    batch = tokenizer(["What is 3 + 5?", "Say dog 3 times."], return_tensors="pt", padding=True)
    start = AutoModelForCausalLM.from_pretrained(parent)
    assert torch.equal(logits(trainer.ref_model, batch), logits(start, batch))
    policy = logits(trainer.model, batch)
    assert (policy - logits(start, batch)).abs().max() > 1e-2

    # final/ is a plain model folder with the trained weights and the chat template.
    assert [(c.step, c.is_final) for c in workspace.store.list_checkpoints(stage_id=ctx.stage_id)] == \
        [(12, False), (12, True)]
    final = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    assert AutoTokenizer.from_pretrained(ctx.final_dir).chat_template == tokenizer.chat_template
    assert torch.allclose(logits(final, batch), policy, atol=1e-5)


@pytest.mark.slow
def test_lora_dpo_scores_the_reference_with_the_adapters_off(make_context, workspace, tmp_path) -> None:
    parent = save_tiny_model(tmp_path / "parent", train_steps=5)
    pairs = separable_pairs(tmp_path / "pairs.jsonl")
    spec = small_spec(parent, pairs, lora=LoraSpec(r=4, alpha=8), learning_rate=5e-3, precompute_ref_log_probs="on",
                      eval_prompt_count=0)
    ctx = make_context(spec)
    # Built and trained here rather than through run(), whose save merges the
    # adapters into the model in place: the adapters are looked at before that.
    trainer, _, margin = dpo.build_trainer(ctx, choose_runtime("cpu"))
    attach_stage_callback(trainer, ctx, perplexity=False)
    trainer.add_callback(margin)
    trainer.train()
    ctx.flush()

    margins = series(workspace, ctx, "eval/logp_margin")
    assert [step for step, _ in margins] == [0, 6, 12]
    assert margins[-1][1] > margins[0][1] + 1, margins
    assert workspace.store.get_stage(stage_id=ctx.stage_id).config["reference"] == \
        "the policy with its LoRA adapters off"

    # The reference log-probs were computed before training, with the adapters
    # off: exactly the starting model's, pair by pair.
    start = AutoModelForCausalLM.from_pretrained(parent)
    data = trainer.train_dataset
    reference = dpo.HeldOutLogpMargin(ctx, data, trainer.data_collator, batch_size=16)
    assert dpo.logp_margins(start, reference.batches()) == pytest.approx(
        [c - r for c, r in zip(data["ref_chosen_logps"], data["ref_rejected_logps"])], abs=1e-3)

    # Adapters off, the policy is still the starting model; on, it moved.
    tokenizer = trainer.processing_class
    batch = tokenizer(["What is 3 + 5?", "Say dog 3 times."], return_tensors="pt", padding=True)
    policy = trainer.model
    with policy.disable_adapter():
        assert torch.allclose(logits(policy, batch), logits(start, batch), atol=1e-6)
    trained = logits(policy, batch)
    assert (trained - logits(start, batch)).abs().max() > 1e-2

    # final/ holds the merged model, final/adapter the adapter alone.
    save_final(policy, tokenizer, ctx.final_dir, base=str(parent))
    assert (ctx.final_dir / "adapter" / "adapter_config.json").is_file()
    assert not (ctx.final_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    assert torch.allclose(logits(merged, batch), trained, atol=1e-4)


@pytest.mark.slow
def test_a_cancelled_dpo_run_resumes_from_its_checkpoint(make_context, workspace, tmp_path) -> None:
    parent = save_tiny_model(tmp_path / "parent", train_steps=5)
    pairs = separable_pairs(tmp_path / "pairs.jsonl", count=30)
    spec = small_spec(parent, pairs, max_steps=6, batch_size=4, eval_every=100, eval_prompt_count=0)

    first = make_context(spec, stop_at_step=3)
    with pytest.raises(StageCancelled):
        dpo.run(first)
    saved = workspace.store.list_checkpoints(stage_id=first.stage_id)
    assert [(c.step, c.is_final) for c in saved] == [(3, False)]
    assert not first.final_dir.exists()

    resumed = make_context(spec, like=first, resume_from=Path(saved[0].path))
    dpo.run(resumed)
    assert workspace.store.get_stage(stage_id=first.stage_id).step == 6
    assert [step for step, _ in series(workspace, first, "train/loss")] == list(range(1, 7))
    # Evaluated at the start of the first run and at the end of the resumed one, not again at its start.
    assert [step for step, _ in series(workspace, first, "eval/logp_margin")] == [0, 6]
    assert (first.final_dir / "model.safetensors").is_file()


def test_a_selection_without_judgements_fails_with_one_clear_line(make_context, workspace, tmp_path) -> None:
    store = workspace.store
    ids = store.add_prompts([{"text": "What is 3 + 5?"}])
    batch = store.create_sample_batch(name="unjudged", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": ids[0], "batch_id": batch.id, "response": r} for r in ("8", "9")])
    ctx = make_context(DPOSpec(from_=f"path:{tmp_path / 'never-loaded'}", batches=["unjudged"],
                               annotators="judges"))
    with pytest.raises(UserInputError, match=r"no preference pairs to learn from: .* annotators \(judges\)"):
        dpo.run(ctx)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("loss_type", '"foo"', "field 'loss_type'"),
    ("beta", "0", "field 'beta'"),
    ("beta", "-0.1", "field 'beta'"),
])
def test_bad_dpo_settings_are_rejected_naming_the_field(field: str, value: str, message: str) -> None:
    text = f'[stages.dpo]\nkind = "dpo"\nfrom = "org/model"\npreferences = "rank"\n{field} = {value}\n' \
           '[stages.rank]\nkind = "rank"\nbatch = "b"\n'
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="t.toml", base_dir=Path.cwd())
    assert len(info.value.problems) == 1 and message in info.value.problems[0], info.value.problems


def test_a_dpo_stage_reads_a_rank_stage_and_starts_from_a_model() -> None:
    text = ('[stages.dpo]\nkind = "dpo"\nfrom = "sft"\npreferences = ["rank"]\nannotators = "judges"\n'
            '[stages.sft]\nkind = "sft"\n[stages.rank]\nkind = "rank"\nbatch = "b"\n')
    spec = parse_spec(text, source="t.toml", base_dir=Path.cwd())
    stage = spec.stages["dpo"]
    assert isinstance(stage, DPOSpec)
    assert stage.from_ == "stage:sft" and stage.preferences == ["stage:rank"]
    assert set(spec.dependencies["dpo"]) == {"sft", "rank"}
    with pytest.raises(SpecError, match="field 'from': missing; this field is required"):
        parse_spec('[stages.dpo]\nkind = "dpo"\npreferences = "rank"\n[stages.rank]\nkind = "rank"\nbatch = "b"\n',
                   source="t.toml", base_dir=Path.cwd())


@pytest.mark.parametrize(("setting", "steps", "processes", "expected"), [
    ("auto", 10, 1, True),     # 10 x 8 pairs seen >= 60: one pass up front pays off
    ("auto", 5, 1, False),     # 40 pairs seen < 60: scoring all 60 first costs more
    ("auto", 10, 2, False),    # TRL's per-process cache of in-memory data: one process only
    ("on", 5, 1, True),
    ("off", 10, 1, False),
])
def test_when_the_reference_is_scored_before_training(setting: str, steps: int, processes: int,
                                                      expected: bool) -> None:
    spec = DPOSpec(from_="hub:org/model", batches=["b"], precompute_ref_log_probs=setting, max_steps=steps,
                   batch_size=8)
    hardware = Runtime(device="cpu", bf16=False, fp16=False, world_size=processes)
    assert precompute_reference(spec, 60, hardware) is expected


@pytest.mark.slow  # trains DPO twice
def test_sft_weight_adds_the_chosen_answers_likelihood_to_the_loss(make_context, tmp_path) -> None:
    """RPO: with sft_weight the trainer optimises DPO's loss plus that weight
    times the chosen answers' NLL, and a few steps of it train."""
    parent = save_tiny_model(tmp_path / "parent", train_steps=5)
    pairs = separable_pairs(tmp_path / "pairs.jsonl", count=24)
    ctx = make_context(small_spec(parent, pairs, sft_weight=0.5, max_steps=2, eval_every=100, sample_every=100,
                                  eval_prompt_count=0))
    trainer, _, _ = dpo.build_trainer(ctx, choose_runtime("cpu"))
    assert trainer.loss_types == ["sigmoid", "sft"]
    assert trainer.loss_weights == [1.0, 0.5]
    assert trainer.train().global_step == 2

    plain, _, _ = dpo.build_trainer(make_context(small_spec(parent, pairs, max_steps=2)), choose_runtime("cpu"))
    assert plain.loss_types == ["sigmoid"]
