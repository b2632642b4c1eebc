"""The rloo and grpo stages end to end on tiny models, against a real store.

The models are test_ppo's: a tiny chat policy answering "Say some words."
with 2 to 8 words drawn from eight, and a hand-built reward model whose
score is the share of the word "for" among the tokens it reads. The judge
below likes "for" too, so reward model and judge agree on what is better.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from engine.errors import SpecError, StageCancelled, StageFailed
from engine.spec import parse_spec
from engine.spec.fields import LoraSpec
from engine.stages.common import online_rl
from engine.stages.common.context import StageContext
from engine.stages.common.online_rl_spec import OnlineRLSpec
from engine.stages.grpo import stage as grpo
from engine.stages.grpo.spec import GRPOSpec
from engine.stages.rloo import stage as rloo
from engine.stages.rloo.spec import RLOOSpec
from tests.stages.test_ppo import PROMPTS, REWARDED, counting_reward_model, foreign_tokenizer, word_policy

#: the judge below, as a spec names it
JUDGE = "tests.stages.test_rloo_grpo:count_for"


def count_for(prompt: str, responses: Sequence[str]) -> list[float]:
    """A judge: how many times each response says the rewarded word."""
    assert prompt in PROMPTS  # the user's words, not the chat-framed prompt
    return [float(r.split().count(REWARDED)) for r in responses]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: one thread is much faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rl-models")
    policy = word_policy(root / "policy", steps=100)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return {
        "policy": policy,
        "reward": counting_reward_model(root / "reward", AutoTokenizer.from_pretrained(policy), REWARDED),
        "foreign_reward": counting_reward_model(root / "foreign", foreign_tokenizer(), REWARDED),
        "prompts": prompts,
    }


def settings(models: dict[str, Path], **overrides: object) -> dict[str, object]:
    return {
        "from_": f"path:{models['policy']}", "reward_model": f"path:{models['reward']}",
        "prompts": f"path:{models['prompts']}", "max_steps": 4, "prompts_per_step": 4, "num_generations": 4,
        "learning_rate": 1e-3, "beta": 0.02, "max_new_tokens": 10, "sample_every": 2, "samples_per_step": 2,
        "eval_prompt_count": 2, "sample_max_new_tokens": 8, "save_every": 100, "device": "cpu",
        "eval_prompts": "builtin:demo-prompts", "eval_judge": "demo",
        **overrides,
    }


def series(workspace, ctx: StageContext, key: str) -> list[float]:
    return [p.value for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def steps(workspace, ctx: StageContext, key: str) -> list[int]:
    return [int(p.step) for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


# --- the specs ------------------------------------------------------------------------


def spec_problems(tmp_path: Path, table: str) -> list[str]:
    """Problems of an online stage `table` after an sft stage on the demo (so the demo's prompts are its default)."""
    with pytest.raises(SpecError) as info:
        parse_spec(f'[stages.sft]\nkind = "sft"\n\n[stages.rl]\n{table}', source="p.toml", base_dir=tmp_path)
    return info.value.problems


@pytest.mark.parametrize("kind", ["rloo", "grpo"])
def test_a_judge_named_wrong_is_rejected_with_its_field(tmp_path, kind) -> None:
    problems = spec_problems(tmp_path, f'kind = "{kind}"\nfrom = "sft"\njudges = ["demo", "my judge"]\n')
    assert problems == [
        "p.toml: stage 'rl', field 'judges': item 2 of the array, 'my judge', is neither `demo` nor a Python "
        "callable written module:function, got an array"
    ]


def test_other_spec_rejections(tmp_path) -> None:
    assert spec_problems(tmp_path, 'kind = "rloo"\nfrom = "sft"\n') == [
        "p.toml: stage 'rl': name what scores the completions: `reward_model` and/or `judges`, got a table"]
    [line] = spec_problems(tmp_path, 'kind = "grpo"\nfrom = "builtin:llama-4m"\njudges = ["demo"]\n')
    assert "field 'from': expected a trained policy" in line
    [line] = spec_problems(tmp_path, 'kind = "rloo"\nfrom = "sft"\njudges = ["demo"]\nprompts_per_step = 3\n'
                                     'num_generations = 3\ngradient_accumulation_steps = 2\n')
    assert "field 'gradient_accumulation_steps': 2 does not divide a step's 9 completions" in line
    spec = parse_spec('[stages.sft]\nkind = "sft"\n[stages.rl]\nkind = "grpo"\nfrom = "sft"\njudges = "demo"\n'
                      'prompts_per_step = 6\nnum_generations = 4\ngradient_accumulation_steps = 3\n',
                      source="p.toml", base_dir=tmp_path).stages["rl"]
    assert isinstance(spec, GRPOSpec) and spec.judges == ["demo"]  # one judge needs no array
    assert spec.batch_size == 8  # completions per micro-batch: 6 x 4 / 3


def test_comparable_metrics_follow_ppos_meaning() -> None:
    logs = {"reward": 2.0, "kl": 0.1, "completions/mean_length": 5.0, "rewards/reward_model/mean": 1.5,
            "entropy": 0.7, "completions/clipped_ratio": 0.25, "clip_ratio/region_mean": 0.0}
    assert online_rl.comparable_metrics(logs, beta=0.2) == {
        "ppo/beta": 0.2, "ppo/rm_score": 1.5, "ppo/kl": pytest.approx(0.5), "ppo/reward": pytest.approx(1.9),
        "ppo/entropy": 0.7, "ppo/response_length": 5.0, "ppo/ended_fraction": 0.75, "ppo/clip_fraction": 0.0}
    assert set(online_rl.comparable_metrics(logs, beta=0.2)) == set(online_rl.COMPARABLE)


# --- the stages -----------------------------------------------------------------------


def check_a_finished_run(workspace, ctx: StageContext, spec: OnlineRLSpec) -> None:
    """What every finished run records: trl's metrics and PPO's names for them
    at every step, the time split, eval answers, rollout samples, final/."""
    every_step = list(range(1, spec.max_steps + 1))
    for key in ("train/reward", "train/loss", "ppo/reward", "ppo/kl", "ppo/entropy", "ppo/response_length",
                "ppo/ended_fraction", "time/generation", "time/scoring", "time/training"):
        assert steps(workspace, ctx, key) == every_step, key
    assert all(s > 0 for key in ("time/generation", "time/scoring", "time/training")
               for s in series(workspace, ctx, key))
    # What the step maximised: the scores minus beta x the KL per completion.
    for reward, score, kl in zip(series(workspace, ctx, "ppo/reward"), series(workspace, ctx, "train/reward"),
                                 series(workspace, ctx, "ppo/kl")):
        assert reward == pytest.approx(score - spec.beta * kl, abs=1e-5)
    # The eval prompts (demo prompts, judged) before the first step, every sample_every steps and at the end.
    assert steps(workspace, ctx, "eval/judge_score") == [0, *every_step[spec.sample_every - 1::spec.sample_every]]
    rollouts = [s for s in workspace.store.list_samples(stage_id=ctx.stage_id) if s.meta.get("kind") == "rollout"]
    assert len(rollouts) == spec.samples_per_step * (spec.max_steps // spec.sample_every)
    assert all(s.prompt in PROMPTS and "advantage" in s.meta for s in rollouts)

    # final/: a plain causal LM with its tokenizer and chat template.
    model = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    assert model.config.use_cache and AutoTokenizer.from_pretrained(ctx.final_dir).chat_template
    (final,) = [c for c in workspace.store.list_checkpoints(stage_id=ctx.stage_id) if c.is_final]
    assert final.step == spec.max_steps


@pytest.mark.slow  # needs `models`, a policy trained for 100 steps
def test_rloo_with_a_reward_model_and_a_judge(make_context, workspace, models, caplog) -> None:
    spec = RLOOSpec(**settings(models, judges=[JUDGE]))
    ctx = make_context(spec)
    rloo.run(ctx)
    check_a_finished_run(workspace, ctx, spec)
    # trl loads the reference with the settings it says it ignores (true of the policy only): not in the log.
    assert not [r for r in caplog.records if "is already instantiated" in r.getMessage()]

    # Each scorer's mean, under trl's names and PPO's; the reward is their sum.
    rm_score = series(workspace, ctx, "ppo/rm_score")
    assert rm_score == series(workspace, ctx, "train/rewards/reward_model/mean")
    judged = series(workspace, ctx, f"train/rewards/judge:{JUDGE}/mean")
    for total, a, b in zip(series(workspace, ctx, "train/reward"), rm_score, judged):
        assert total == pytest.approx(a + b, abs=1e-4)
    kl = series(workspace, ctx, "ppo/kl")
    assert kl[0] == pytest.approx(0, abs=1e-4)  # the policy is its reference before any step
    assert kl[-1] > 1e-3, kl
    # Measured: the reward model's score goes from 0.36 to 1.0 in 4 steps (more "for", longer answers).
    assert sum(rm_score[-2:]) / 2 > rm_score[0], rm_score
    for sample in workspace.store.list_samples(stage_id=ctx.stage_id):
        if sample.meta.get("kind") == "rollout":
            assert sample.meta[f"judge:{JUDGE}"] == sample.response.split().count(REWARDED)
            assert sample.meta["reward"] == pytest.approx(sample.meta["rm_score"] + sample.meta[f"judge:{JUDGE}"],
                                                          abs=1e-3)
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert config["rewards"]["judges"] == [f"judge:{JUDGE}"] and config["kl_estimator"] == "k1"
    assert config["completions_per_step"] == 16 and config["per_device_train_batch_size"] == 16
    # The frozen models in the compute precision: fp32 on the CPU.
    assert config["policy"]["reference"] == "a frozen copy, reloaded from the policy's source (float32)"
    assert config["rewards"]["reward_model"]["held_as"] == "float32"
    assert config["model_init_kwargs"] == {"dtype": "float32"}


@pytest.mark.slow  # needs `models`, a policy trained for 100 steps
def test_grpo_with_lora_and_a_judge_alone(make_context, workspace, models) -> None:
    spec = GRPOSpec(**settings(models, reward_model=None, judges=[JUDGE], lora=LoraSpec(r=4, alpha=8),
                               learning_rate=1e-2, gradient_accumulation_steps=2))
    ctx = make_context(spec)
    grpo.run(ctx)
    check_a_finished_run(workspace, ctx, spec)
    assert not series(workspace, ctx, "ppo/rm_score")  # no reward model
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert config["policy"]["reference"] == "the policy with its adapters off"
    assert config["policy"]["trainable_parameters"] < config["policy"]["parameters"] / 2
    assert config["per_device_train_batch_size"] == 8 and config["kl_estimator"] == "k3"

    # final/: the merged model, loadable without peft; final/adapter: the adapter.
    assert json.loads((ctx.final_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    merged = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    start = AutoModelForCausalLM.from_pretrained(models["policy"])
    ids = torch.tensor([[4, 100, 200, 2, 5]])
    with torch.no_grad():
        assert (merged(ids).logits - start(ids).logits).abs().max() > 1e-4  # the adapters were merged in


@pytest.mark.slow  # needs `models`, a policy trained for 100 steps
def test_the_reward_model_reads_the_conversation_in_its_own_template(make_context, workspace, models) -> None:
    spec = RLOOSpec(**settings(models, reward_model=f"path:{models['foreign_reward']}", max_steps=1,
                               sample_every=1, samples_per_step=4, eval_prompt_count=0))
    ctx = make_context(spec)
    rloo.run(ctx)
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert not config["rewards"]["reward_model"]["shares_policy_tokenizer"]

    # Each stored score is the reward model's on the prompt and the response as a
    # conversation in its own tokenizer's chat template, as the reward stage framed pairs.
    tokenizer = AutoTokenizer.from_pretrained(models["foreign_reward"])
    reward_model = AutoModelForSequenceClassification.from_pretrained(models["foreign_reward"])
    samples = workspace.store.list_samples(stage_id=ctx.stage_id)
    assert len(samples) == 4
    for sample in samples:
        text = tokenizer.apply_chat_template([{"role": "user", "content": sample.prompt},
                                              {"role": "assistant", "content": sample.response}], tokenize=False)
        assert text.startswith("USER: ")
        with torch.no_grad():
            expected = reward_model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits.item()
        assert sample.meta["rm_score"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow  # needs `models`, a policy trained for 100 steps
def test_a_judge_that_cannot_be_imported_fails_before_any_model_loads(make_context, models) -> None:
    spec = RLOOSpec(**settings(models, judges=["tests.no_such_module:judge"]))
    with pytest.raises(StageFailed, match=r"cannot import module 'tests\.no_such_module'"):
        rloo.run(make_context(spec))


@pytest.mark.slow  # needs `models`, a policy trained for 100 steps
def test_cancel_then_resume_makes_the_steps_an_uninterrupted_run_makes(make_context, workspace, models) -> None:
    # 4 prompts, 2 per step: the cancel comes in the middle of the second pass
    # over them, and the resumed run goes on into the third.
    spec = RLOOSpec(**settings(models, max_steps=5, prompts_per_step=2, num_generations=2, eval_prompt_count=1,
                               samples_per_step=0))
    reference = make_context(spec)
    rloo.run(reference)

    first = make_context(spec, stop_at_step=3)
    with pytest.raises(StageCancelled, match="stopped at step 3 of 5"):
        rloo.run(first)
    saved = workspace.store.list_checkpoints(stage_id=first.stage_id)
    assert [(c.step, c.is_final) for c in saved] == [(3, False)]
    assert not first.final_dir.exists()

    resumed = make_context(spec, like=first, resume_from=Path(saved[0].path))
    rloo.run(resumed)
    assert workspace.store.get_stage(stage_id=first.stage_id).step == 5
    for key in ("train/reward", "ppo/kl", "train/loss", "ppo/response_length"):
        assert steps(workspace, first, key) == [1, 2, 3, 4, 5], key
        assert series(workspace, first, key) == pytest.approx(series(workspace, reference, key), rel=1e-4,
                                                              abs=1e-6), key
    # Eval answers every 2 steps and at the last: none at 3, the cancelled step.
    assert workspace.store.sample_steps(stage_id=first.stage_id) == [0, 2, 4, 5]
    reloaded = AutoModelForCausalLM.from_pretrained(first.final_dir)
    expected = AutoModelForCausalLM.from_pretrained(reference.final_dir)
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), expected.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
