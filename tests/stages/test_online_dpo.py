"""The online_dpo stage end to end on tiny models, against a real store, and
its judge adapter: a judge sees each prompt's two completions together.

The models are test_ppo's: a tiny chat policy answering "Say some words."
with 2 to 8 words drawn from eight, and a hand-built reward model whose
score is the share of the word "for" among the tokens it reads; the judge
below likes "for" too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.errors import StageFailed
from engine.feedback.judges import Judge
from engine.stages.online_dpo import stage as online_dpo
from engine.stages.online_dpo.spec import OnlineDPOSpec
from tests.stages.test_ppo import PROMPTS, REWARDED, counting_reward_model, word_policy

#: the judge below, as a spec names it
JUDGE = "tests.stages.test_online_dpo:count_for"


def count_for(prompt: str, responses: Sequence[str]) -> list[float]:
    """A judge: how many times each response says the rewarded word."""
    assert prompt in PROMPTS and len(responses) == 2  # the user's words, and one pair at a time
    return [float(r.split().count(REWARDED)) for r in responses]


def conversation(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def test_a_judge_scores_each_prompts_two_completions_together() -> None:
    seen: list[tuple[str, list[str]]] = []

    def longer_first(prompt: str, responses: Sequence[str]) -> list[float]:
        seen.append((prompt, list(responses)))
        return [float(len(r)) for r in responses]

    reward = online_dpo.pair_judge_reward(Judge("mine:longer", longer_first))
    # trl's order: every prompt's first completion, then every prompt's second.
    prompts = [conversation("user", p) for p in ("a", "b", "a", "b")]
    completions = [conversation("assistant", c) for c in ("x", "yyy ", "xx", "y")]
    assert reward(prompts=prompts, completions=completions, completion_ids=[]) == [1.0, 3.0, 2.0, 1.0]
    assert seen == [("a", ["x", "xx"]), ("b", ["yyy", "y"])]
    assert reward.__name__ == "judge:mine:longer"

    broken = online_dpo.pair_judge_reward(Judge("mine:nan", lambda p, r: [float("nan"), 1.0]))
    with pytest.raises(StageFailed, match="expected two finite scores"):
        broken(prompts=prompts, completions=completions)


def test_ppo_names_only_where_they_mean_the_same() -> None:
    logs = {"objective/kl": 0.4, "objective/scores": 1.5, "beta": 0.1, "val/contain_eos_token": 0.75,
            "rewards/margins": 0.2}
    assert online_dpo.comparable_metrics(logs, reward_model_only=True) == {
        "ppo/kl": 0.4, "ppo/beta": 0.1, "ppo/rm_score": 1.5, "ppo/ended_fraction": 0.75}
    # With judges in the sum the score is not the reward model's.
    assert "ppo/rm_score" not in online_dpo.comparable_metrics(logs, reward_model_only=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a busy 2-core machine: one thread is faster
    root = tmp_path_factory.mktemp("online-dpo-models")
    policy = word_policy(root / "policy", steps=100)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    found = {"policy": policy, "prompts": prompts,
             "reward": counting_reward_model(root / "reward", AutoTokenizer.from_pretrained(policy), REWARDED)}
    yield found
    torch.set_num_threads(threads)


def rewarded_share(folder: Path, *, answers: int = 16) -> float:
    """How many times per answer `folder`'s policy says the rewarded word, over
    `answers` sampled answers to each prompt (seeded, so start and end compare)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.manual_seed(0)
    count = 0
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids.repeat(answers, 1), do_sample=True, max_new_tokens=10, top_k=0,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        count += sum(t.split().count(REWARDED) for t in texts)
    return count / (answers * len(PROMPTS))


def series(workspace, ctx, key: str) -> list[float]:
    return [p.value for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def steps(workspace, ctx, key: str) -> list[int]:
    return [int(p.step) for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def scored_spec(models: dict[str, Path], seed: int) -> OnlineDPOSpec:
    """10 online DPO steps on the word policy, scored by the counting reward model and judge."""
    return OnlineDPOSpec(
        from_=f"path:{models['policy']}", reward_model=f"path:{models['reward']}", judges=[JUDGE],
        prompts=f"path:{models['prompts']}", max_steps=10, prompts_per_step=4, learning_rate=3e-3, beta=0.1,
        max_new_tokens=10, sample_every=2, samples_per_step=4, eval_prompt_count=2, sample_max_new_tokens=8,
        save_every=100, device="cpu", eval_prompts="builtin:demo-prompts", eval_judge="demo", seed=seed,
    )


@pytest.mark.slow  # a policy trained for 100 steps, then three runs of 10 online DPO steps (~4 s each)
def test_online_dpo_with_a_reward_model_and_a_judge(make_context, workspace, models) -> None:
    spec = scored_spec(models, seed=1)
    ctx = make_context(spec)
    online_dpo.run(ctx)

    every_step = list(range(1, spec.max_steps + 1))
    # DPO's names, on the pairs it sampled itself, at every step; PPO's where they mean the same.
    for key in ("train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins",
                "train/rewards/accuracies", "train/logps/chosen", "train/logps/rejected", "train/objective/scores",
                "train/objective/scores_margin", "ppo/kl", "ppo/ended_fraction"):
        assert steps(workspace, ctx, key) == every_step, key
    assert not series(workspace, ctx, "ppo/rm_score")  # the judge is in the sum too
    # The scorer's choice is the chosen answer: its score is never below the rejected one's.
    assert all(m >= 0 for m in series(workspace, ctx, "train/objective/scores_margin"))
    # Before the first update the policy is its reference: DPO's loss is ln 2, no implicit reward, no KL.
    loss, margins, kl = (series(workspace, ctx, k) for k in ("train/loss", "train/rewards/margins", "ppo/kl"))
    assert loss[0] == pytest.approx(math.log(2), abs=1e-3) and margins[0] == kl[0] == pytest.approx(0, abs=1e-4)
    assert any(abs(k) > 1e-3 for k in kl[1:]), kl  # then it moves away from it
    scores = series(workspace, ctx, "train/objective/scores")  # the scorers' mean over each step's samples
    assert sum(scores[-2:]) / 2 > scores[0], scores
    # The eval prompts, judged, as DPO's: before the first step, every sample_every steps.
    assert steps(workspace, ctx, "eval/judge_score") == [0, 2, 4, 6, 8, 10]

    # Pairs as samples: both answers of a prompt, the higher-scored one chosen.
    rollouts = [s for s in workspace.store.list_samples(stage_id=ctx.stage_id) if s.meta.get("kind") == "rollout"]
    assert len(rollouts) == 5 * 4  # 2 pairs of 2 answers, at steps 2, 4, 6, 8 and 10
    for first, second in zip(rollouts[::2], rollouts[1::2]):
        assert first.prompt == second.prompt and first.meta["chosen"] != second.meta["chosen"]
        chosen, rejected = (first, second) if first.meta["chosen"] else (second, first)
        assert chosen.meta["score"] >= rejected.meta["score"]

    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert config["policy"]["reference"] == "a frozen copy of the starting policy"
    assert config["rewards"]["judges"] == [f"judge:{JUDGE}"] and config["per_device_train_batch_size"] == 4
    model = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    assert model.config.use_cache and AutoTokenizer.from_pretrained(ctx.final_dir).chat_template

    # It learns what the scorers like: its answers say the rewarded word more often. With 8 answers a
    # step one run is noisy (one seed's answers can stop ending and lose the word), and a single tuned
    # seed broke on a newer transformers (6 steps, seed 1: 2.16 -> 0.39 words), so three seeds at 10
    # steps. Measured with transformers 5.25 (0.44 words per answer before): seeds 0-4 gave 0.47,
    # 0.72, 4.89, 1.03, 0.63: every seed above the start, the median far above.
    before = rewarded_share(models["policy"])
    after = [rewarded_share(ctx.final_dir)]
    for seed in (2, 3):
        other = make_context(scored_spec(models, seed=seed))
        online_dpo.run(other)
        after.append(rewarded_share(other.final_dir))
    assert min(after) > before and sorted(after)[1] > before + 0.2, (before, after)
