"""Another round: the next pipeline starts from the newest policy, keeps every round's rankings,
and continues the source run's own task (its prompts, judge and settings), never the demo's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import UserInputError, parse_spec
from engine.demo.pipeline import demo_spec
from engine.recipe.rounds import next_round_spec
from store import NewStage, StageStatus, Store, open_workspace


def finished_run(store: Store, tmp_path: Path, name: str, spec: dict, kinds: list[tuple[str, str]]) -> int:
    run = store.create_run(name=name, spec_text="", spec=spec, spec_path=None, stages=[
        NewStage(name=n, kind=k, position=i, parent=None, config={}) for i, (n, k) in enumerate(kinds)])
    for stage in store.list_stages(run_id=run.id):
        folder = tmp_path / name / stage.name / "final"
        folder.mkdir(parents=True)
        store.update_stage(stage.id, status=StageStatus.SUCCEEDED, output_path=str(folder))
    return run.id


def ranked_batch(store: Store, run_id: int, stage_name: str) -> int:
    stage = next(s for s in store.list_stages(run_id=run_id) if s.name == stage_name)
    [prompt] = store.add_prompts([{"text": f"q {run_id}"}])
    batch = store.create_sample_batch(name=stage_name, settings={}, sources=[], run_id=run_id, stage_id=stage.id)
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("a", "b")])
    store.feedback.items_from_batch(batch_id=batch.id)
    item = store.feedback.next_item(batch_id=batch.id, annotator="judge:demo")
    assert item is not None
    store.feedback.judge(item_id=item.id, annotator="judge:demo", outcome="a_better", shown=item.shown)
    return batch.id


def test_rounds_start_from_the_newest_policy_and_keep_every_ranking(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    store = ws.store
    demo = finished_run(store, tmp_path, "demo", {"stages": demo_spec().to_dict()},
                        [("sft", "sft"), ("sample", "sample"), ("rank", "rank"), ("reward", "reward"),
                         ("ppo", "ppo"), ("dpo", "dpo")])
    first = ranked_batch(store, demo, "sample")

    second = next_round_spec(store, demo)
    assert second.name == "demo-round-2"
    assert second.stages["sample"].models == [f"path:{tmp_path / 'demo' / 'ppo' / 'final'}"]  # PPO before DPO
    assert second.stages["reward"].batches == [str(first)]
    assert second.stages["reward"].from_ == f"path:{tmp_path / 'demo' / 'reward' / 'final'}"
    # The demo's round is on the demo's task, because the demo's spec names it.
    assert second.stages["rank"].judge == "demo"
    assert second.stages["sample"].prompts == "builtin:demo-instructions"
    assert (second.stages["ppo"].prompts, second.stages["ppo"].eval_prompts, second.stages["ppo"].eval_judge) == (
        "builtin:demo-instructions", "builtin:demo-prompts", "demo")
    assert (second.stages["arena_answers"].prompts, second.stages["arena"].judge) == ("builtin:demo-prompts", "demo")
    assert second.stages["arena_answers"].models == [f"path:{tmp_path / 'demo' / 'ppo' / 'final'}", "stage:ppo"]
    assert (second.stages["ppo"].learning_rate, second.stages["ppo"].updates, second.stages["reward"].max_steps) == (
        1e-5, 30, 200)  # the demo's own settings; 1e-5 survives the TOML exactly
    assert (second.stages["ppo"].seed, second.stages["sample"].seed) == (1, 1)  # one more than the round before

    round2 = finished_run(store, tmp_path, "demo-round-2", {"stages": second.to_dict()},
                          [("sample", "sample"), ("rank", "rank"), ("reward", "reward"), ("ppo", "ppo")])
    new = ranked_batch(store, round2, "sample")
    third = next_round_spec(store, round2, judge=None, ppo_updates=5)
    assert third.name == "demo-round-3"
    assert third.stages["reward"].batches == [str(first), str(new)]  # every round's rankings
    assert third.stages["rank"].judge is None  # people rank this one
    assert third.stages["arena"].judge == "demo"  # the arena keeps its judge
    assert (third.stages["ppo"].updates, third.stages["ppo"].seed) == (5, 2)
    assert third.stages["sample"].models == [f"path:{tmp_path / 'demo-round-2' / 'ppo' / 'final'}"]
    ws.close()


def test_a_run_without_a_policy_cannot_go_another_round(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    run = finished_run(ws.store, tmp_path, "p", {"stages": {}}, [("pretrain", "pretrain")])
    with pytest.raises(UserInputError, match="no finished policy stage"):
        next_round_spec(ws.store, run)
    ws.close()


USER_SPEC = """
name = "mine"
[stages.sft]
kind = "sft"
from = "./base-model"
data = "./chats.jsonl"
[stages.sample]
kind = "sample"
from = "sft"
prompts = "./prompts.jsonl"
prompt_field = "question"
responses_per_prompt = 3
temperature = 0.7
max_new_tokens = 200
[stages.rank]
kind = "rank"
from = "sample"
JUDGE
[stages.reward]
kind = "reward"
from = "sft"
preferences = "rank"
learning_rate = 3e-5
max_steps = 1000
[stages.ppo]
kind = "ppo"
from = "sft"
tokenizer = "sft"
reward_model = "reward"
prompts = "./prompts.jsonl"
prompt_field = "question"
learning_rate = 2e-6
max_new_tokens = 200
updates = 400
"""


def users_files(tmp_path: Path) -> None:
    """What the user's spec names (the loader checks that local paths exist)."""
    (tmp_path / "base-model").mkdir(exist_ok=True)
    (tmp_path / "chats.jsonl").write_text('{"prompt": "hi", "response": "hello"}\n')
    (tmp_path / "prompts.jsonl").write_text('{"question": "why?"}\n')


def user_run(store: Store, tmp_path: Path, judge: str | None) -> int:
    users_files(tmp_path)
    text = USER_SPEC.replace("JUDGE", f'judge = "{judge}"' if judge else "")
    spec = parse_spec(text, source="mine.toml", base_dir=tmp_path)
    return finished_run(store, tmp_path, "mine", {"stages": spec.to_dict()},
                        [(name, stage.kind) for name, stage in spec.stages.items()])


def test_a_users_run_goes_another_round_on_its_own_task_and_judge(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    run = user_run(ws.store, tmp_path, judge="my_judges:helpful")
    spec = next_round_spec(ws.store, run)
    stages = spec.stages
    assert "builtin:demo" not in json.dumps(spec.to_dict())
    prompts = f"path:{tmp_path / 'prompts.jsonl'}"
    assert (stages["sample"].prompts, stages["sample"].prompt_field) == (prompts, "question")
    assert (stages["sample"].responses_per_prompt, stages["sample"].temperature,
            stages["sample"].max_new_tokens) == (3, 0.7, 200)
    assert stages["rank"].judge == stages["arena"].judge == "my_judges:helpful"
    assert (stages["reward"].learning_rate, stages["reward"].max_steps) == (3e-5, 1000)
    ppo = stages["ppo"]
    assert (ppo.prompts, ppo.learning_rate, ppo.max_new_tokens, ppo.updates) == (prompts, 2e-6, 200, 400)
    assert (ppo.eval_prompts, ppo.eval_judge) == (None, None)  # the stage holds out its own prompts
    assert ppo.tokenizer == f"path:{tmp_path / 'mine' / 'sft' / 'final'}"  # the run's stage, by its output
    assert stages["arena_answers"].prompts == prompts  # no arena or eval prompts of its own: its prompts
    # A judge named for the round ranks both the new answers and the arena.
    named = next_round_spec(ws.store, run, judge="other:judge").stages
    assert named["rank"].judge == named["arena"].judge == "other:judge"
    ws.close()


def test_a_run_ranked_by_people_goes_another_round_ranked_by_people(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    spec = next_round_spec(ws.store, user_run(ws.store, tmp_path, judge=None))
    assert spec.stages["rank"].judge is None and spec.stages["arena"].judge is None  # no demo judge
    assert "builtin:demo" not in json.dumps(spec.to_dict()) and '"demo"' not in json.dumps(spec.to_dict())
    ws.close()


def test_a_run_with_no_prompts_anywhere_cannot_go_another_round(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    users_files(tmp_path)
    spec = parse_spec('[stages.sft]\nkind = "sft"\nfrom = "./base-model"\ndata = "./chats.jsonl"\n',
                      source="sft.toml", base_dir=tmp_path)
    run = finished_run(ws.store, tmp_path, "sft-only", {"stages": spec.to_dict()}, [("sft", "sft")])
    with pytest.raises(UserInputError, match="run 'sft-only' has no prompts to sample"):
        next_round_spec(ws.store, run)
    ws.close()


def test_a_rejection_sampling_run_goes_on_by_rejection_sampling(tmp_path: Path) -> None:
    """sft -> sample -> rejection (the demo judge) -> sft on its choices: the next round samples from that
    policy, keeps the best by the same judge, and fine-tunes the policy on them; with a reward model's
    scores, a score stage of the same reward model scores the new answers."""
    ws = open_workspace(tmp_path / "ws")
    store = ws.store
    text = ('[stages.sft]\nkind = "sft"\ndata = "builtin:demo-instructions"\neval_prompts = "builtin:demo-prompts"\n'
            'eval_judge = "demo"\nlearning_rate = 3e-4\n'
            '[stages.sample]\nkind = "sample"\nfrom = "sft"\nprompts = "builtin:demo-instructions"\n'
            '[stages.rejection]\nkind = "rejection"\nsamples = "sample"\njudge = "demo"\nthreshold = 0.5\n'
            '[stages.rs_sft]\nkind = "sft"\nfrom = "sft"\ndata = "rejection"\nlearning_rate = 1e-4\n'
            'eval_prompts = "builtin:demo-prompts"\neval_judge = "demo"\n')
    spec = parse_spec(text, source="rs.toml", base_dir=tmp_path)
    run = finished_run(store, tmp_path, "rs", {"stages": spec.to_dict()},
                       [("sft", "sft"), ("sample", "sample"), ("rejection", "rejection"), ("rs_sft", "sft")])
    policy = f"path:{tmp_path / 'rs' / 'rs_sft' / 'final'}"
    second = next_round_spec(store, run)
    assert list(second.stages) == ["sample", "rejection", "sft", "arena_answers", "arena"]
    assert second.stages["sample"].models == [policy] and second.stages["sample"].seed == 1
    assert (second.stages["rejection"].samples, second.stages["rejection"].judge,
            second.stages["rejection"].threshold) == ("stage:sample", "demo", 0.5)
    assert (second.stages["sft"].from_, second.stages["sft"].data, second.stages["sft"].learning_rate) == (
        policy, "stage:rejection", 1e-4)
    assert second.stages["arena_answers"].models == [policy, "stage:sft"]
    assert second.stages["arena"].judge == "demo"
    with pytest.raises(UserInputError, match="not people's rankings"):
        next_round_spec(store, run, judge=None)

    scored = text.replace('samples = "sample"\njudge = "demo"', 'samples = "score"').replace(
        "[stages.rejection]", '[stages.score]\nkind = "score"\nfrom = "./rm"\nsamples = "sample"\n[stages.rejection]')
    (tmp_path / "rm").mkdir()
    spec = parse_spec(scored, source="rs.toml", base_dir=tmp_path)
    run = finished_run(store, tmp_path, "rm-rs", {"stages": spec.to_dict()},
                       [("sft", "sft"), ("sample", "sample"), ("score", "score"), ("rejection", "rejection"),
                        ("rs_sft", "sft")])
    second = next_round_spec(store, run)
    assert (second.stages["score"].from_, second.stages["score"].samples) == (f"path:{tmp_path / 'rm'}",
                                                                             "stage:sample")
    assert second.stages["rejection"].samples == "stage:score" and second.stages["rejection"].judge is None
    ws.close()
