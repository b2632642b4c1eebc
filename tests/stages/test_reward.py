"""The reward stage end to end, against a real store: a tiny model learns to
order clearly separable pairs (held-out accuracy, per annotator), full and
LoRA both save a folder plain transformers loads, a cancelled run resumes
exactly, and a selection that matches no judgements fails with a clear
message before any model loads. Then the score stage: scores in the store,
and how far they agree with the people who ranked the batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from engine.demo.task import generate_tasks
from engine.errors import StageCancelled, UserInputError
from engine.recipe.reward_agreement import batch_scores
from engine.spec.fields import LoraSpec
from engine.stages.common.context import StageContext
from engine.stages.common.saving import save_final
from engine.stages.reward import stage as reward
from engine.stages.reward.spec import RewardSpec
from engine.stages.score import stage as score
from engine.stages.score.spec import ScoreSpec
from store import Store, open_workspace

from .conftest import MakeContext

#: who ranks which items of the test batch: two people and a judge
ANNOTATORS = ("alice", "bob", "judge:demo")


def responses(reference: str) -> list[str]:
    """Three answers, best first: the exact one, a hedge, none at all."""
    return [reference, f"I think it is {reference}, or maybe not", "no idea"]


def ranked_batch(store: Store, prompts: int = 40, *, name: str = "pairs") -> int:
    """Demo-task prompts with three responses each, every item ranked best
    first by one of ANNOTATORS in turn."""
    tasks = generate_tasks(prompts, seed=3, split="train", repeat=False)
    ids = store.add_prompts([{"text": t.prompt, "reference": t.reference} for t in tasks])
    batch = store.create_sample_batch(name=name, settings={}, sources=["m"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": r}
                       for pid, t in zip(ids, tasks) for r in responses(t.reference)])
    feedback = store.feedback
    feedback.items_from_batch(batch_id=batch.id)
    turn = 0
    while (item := feedback.next_item(batch_id=batch.id, annotator=ANNOTATORS[turn % 3])) is not None:
        # Sample ids were written best first: ascending ids are the ranking.
        feedback.judge(item_id=item.id, annotator=ANNOTATORS[turn % 3], outcome="ranking",
                       shown=item.shown, ranking=sorted(item.shown))
        feedback.release(annotator=ANNOTATORS[turn % 3])
        turn += 1
    return batch.id


def series(store: Store, ctx: StageContext, key: str) -> list[tuple[int, float]]:
    return [(int(p.step), p.value) for p in store.metric_series(stage_id=ctx.stage_id, key=key)]


def scores_of(folder: Path, texts: list[tuple[str, str]]) -> list[float]:
    """Rewards from the folder with plain transformers and its chat template."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    values = []
    with torch.no_grad():
        for prompt, response in texts:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=True, return_dict=True, return_tensors="pt")
            values.append(model(**ids).logits[0, 0].item())
    return values


def held_out_prompts(n: int = 6) -> list[tuple[str, str]]:
    """Prompts of the held-out demo split: no reward stage here trained on them."""
    return [(t.prompt, t.reference) for t in generate_tasks(n, seed=5, split="heldout")]


# --- the reward stage --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path):
    """One full-weight reward stage (llama-1m from its random init, 20 steps:
    ~20-40 s on 2 busy cores), shared by the tests that read what it did."""
    ws = open_workspace(tmp_path_factory.mktemp("reward") / "ws")
    batch = ranked_batch(ws.store)
    spec = RewardSpec(from_="builtin:llama-1m", batches=[str(batch)], eval_fraction=0.25, max_steps=20,
                      batch_size=8, learning_rate=1e-3, warmup_steps=2, eval_every=10, save_every=10)
    from store import NewStage

    run = ws.store.create_run(name="r", spec_text="", spec={}, spec_path=None,
                              stages=[NewStage(name="reward", kind="reward", position=0, parent=None, config={})])
    stage = ws.store.list_stages(run_id=run.id)[0]
    ctx = StageContext(store=ws.store, run_id=run.id, stage_id=stage.id, stage_name="reward", spec=spec,
                       output_dir=ws.stage_dir(run.id, "reward"), cache_dir=shared_cache, stage_outputs={})
    reward.run(ctx)
    yield ws, ctx, batch
    ws.close()


@pytest.mark.slow  # shares one ~20-40 s reward stage
def test_held_out_accuracy_rises_and_is_reported_per_annotator(trained) -> None:
    ws, ctx, _ = trained
    store = ws.store
    accuracy = series(store, ctx, "eval/accuracy")
    assert [step for step, _ in accuracy] == [0, 10, 20]
    assert accuracy[-1][1] >= 0.9, accuracy  # (nearly) every held-out pair ordered right
    assert series(store, ctx, "eval/loss")[-1][1] < series(store, ctx, "eval/loss")[0][1] - 0.3
    assert series(store, ctx, "train/accuracy") and series(store, ctx, "train/loss")
    chosen, rejected = series(store, ctx, "eval/reward_chosen"), series(store, ctx, "eval/reward_rejected")
    assert chosen[-1][1] - rejected[-1][1] > 1.0
    assert series(store, ctx, "eval/margin")[-1][1] > 1.0

    # Accuracy on the pairs people judged, and on each annotator's, at every evaluation.
    keys = set(store.stage_metric_keys(stage_id=ctx.stage_id))
    assert {"eval/accuracy_people", "eval/accuracy/alice", "eval/accuracy/bob",
            "eval/accuracy/judge:demo"} <= keys
    assert "eval/perplexity" not in keys  # a pair loss has no perplexity
    assert [step for step, _ in series(store, ctx, "eval/accuracy_people")] == [0, 10, 20]
    assert series(store, ctx, "eval/accuracy_people")[-1][1] >= 0.9

    stage = store.get_stage(stage_id=ctx.stage_id)
    config = stage.config
    assert stage.device == "cpu (fp32)"
    assert config["bf16"] is False and config["activation_checkpointing"] is False
    assert config["model"]["class"] == "LlamaForSequenceClassification"
    assert config["data"]["eval_pairs"] == 30 and config["data"]["train_pairs"] == 90
    assert config["data"]["annotators"] == {"alice": 42, "bob": 39, "judge:demo": 39}
    assert [(c.step, c.is_final) for c in store.list_checkpoints(stage_id=ctx.stage_id)] == \
        [(10, False), (20, False), (20, True)]


@pytest.mark.slow  # shares one ~20-40 s reward stage
def test_the_final_folder_loads_with_plain_transformers_and_ranks_unseen_prompts(trained) -> None:
    _, ctx, _ = trained
    assert (ctx.final_dir / "model.safetensors").is_file() and (ctx.final_dir / "chat_template.jinja").is_file()
    assert json.loads((ctx.final_dir / "config.json").read_text())["architectures"] == \
        ["LlamaForSequenceClassification"]
    for prompt, reference in held_out_prompts():
        best, hedge, none = scores_of(ctx.final_dir, [(prompt, r) for r in responses(reference)])
        assert best > none and hedge > none, (prompt, best, hedge, none)


@pytest.mark.slow  # trains a LoRA reward model: ~10 s
def test_lora_trains_adapters_and_head_and_saves_a_merged_folder(make_context, workspace) -> None:
    batch = ranked_batch(workspace.store, prompts=24)
    spec = RewardSpec(from_="builtin:llama-1m", batches=[str(batch)], lora=LoraSpec(r=4, alpha=8),
                      eval_fraction=0.25, max_steps=6, batch_size=8, learning_rate=3e-3, warmup_steps=0,
                      eval_every=100, save_every=100)
    ctx = make_context(spec)
    trainer, agreement = reward.build_trainer(ctx, reward.runtime.choose_runtime("cpu"))
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "score" in name for name in trainable)
    assert any("score" in name for name in trainable)  # the new head trains in full
    assert agreement is not None
    trainer.train()

    model = trainer.model.eval()
    tokenizer = trainer.processing_class
    save_final(model, tokenizer, ctx.final_dir)
    texts = [(p, r) for p, ref in held_out_prompts(2) for r in responses(ref)]
    expected = []
    with torch.no_grad():
        for prompt, response in texts:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=True, return_dict=True, return_tensors="pt")
            expected.append(model(**ids).logits[0, 0].item())
    # final/ is a plain model (no peft needed), merged to the same scores.
    assert not (ctx.final_dir / "adapter_config.json").exists()
    assert scores_of(ctx.final_dir, texts) == pytest.approx(expected, abs=1e-4)
    adapter = json.loads((ctx.final_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]


@pytest.mark.slow  # builds a trainer on builtin:llama-1m, and the built-in tokenizer on first use: ~5 s
def test_pairs_of_identical_responses_are_left_out(make_context, workspace) -> None:
    """A ranking that holds the same answer twice orders the two by chance."""
    store = workspace.store
    tasks = generate_tasks(8, seed=3, split="train", repeat=False)
    ids = store.add_prompts([{"text": t.prompt} for t in tasks])
    batch = store.create_sample_batch(name="twice", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": r}
                       for pid, t in zip(ids, tasks) for r in (t.reference, t.reference, "no idea")])
    store.feedback.items_from_batch(batch_id=batch.id)
    while (item := store.feedback.next_item(batch_id=batch.id, annotator="judge:demo")) is not None:
        store.feedback.judge(item_id=item.id, annotator="judge:demo", outcome="ranking", shown=item.shown,
                             ranking=sorted(item.shown))
    spec = RewardSpec(from_="builtin:llama-1m", batches=["twice"], eval_fraction=0.25, max_steps=1)
    ctx = make_context(spec)
    trainer, _ = reward.build_trainer(ctx, reward.runtime.choose_runtime("cpu"))
    # 3 pairs a prompt, one of them the answer against itself: 6 prompts train, 2 held out.
    assert (len(trainer.train_dataset), len(trainer.eval_dataset)) == (12, 4)
    assert workspace.store.get_stage(stage_id=ctx.stage_id).config["data"]["identical_pairs_dropped"] == 8


@pytest.mark.slow  # three short runs: ~20 s
def test_cancel_then_resume_continues_exactly(make_context: MakeContext, workspace) -> None:
    batch = ranked_batch(workspace.store, prompts=24)
    # 18 training prompts, 2 a batch: 9 batches an epoch, so the resumed run
    # skips into the middle of the first epoch's prompt order.
    spec = RewardSpec(from_="builtin:llama-1m", batches=[str(batch)], eval_fraction=0.25, max_steps=8,
                      batch_size=6, learning_rate=1e-3, warmup_steps=2, eval_every=100, save_every=100)
    reference = make_context(spec)
    reward.run(reference)

    first = make_context(spec, stop_at_step=4)
    with pytest.raises(StageCancelled):
        reward.run(first)
    (saved,) = workspace.store.list_checkpoints(stage_id=first.stage_id)
    assert saved.step == 4 and not first.final_dir.exists()
    resumed = make_context(spec, like=first, resume_from=Path(saved.path))
    reward.run(resumed)

    for key in ("train/loss", "train/accuracy"):
        got = series(workspace.store, first, key)
        assert [s for s, _ in got] == list(range(1, 9)), key
        assert [v for _, v in got] == pytest.approx([v for _, v in series(workspace.store, reference, key)],
                                                    rel=1e-4), key


def test_a_selection_matching_no_judgements_fails_before_any_model_loads(make_context, workspace) -> None:
    store = workspace.store
    (prompt,) = store.add_prompts([{"text": "What is 3 + 5?"}])
    batch = store.create_sample_batch(name="judged", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("8", "9")])
    store.feedback.items_from_batch(batch_id=batch.id)
    item = store.feedback.next_item(batch_id=batch.id, annotator="judge:demo")
    store.feedback.judge(item_id=item.id, annotator="judge:demo", outcome="a_better", shown=item.shown)

    spec = RewardSpec(from_="builtin:llama-1m", batches=["judged"], annotators="people")
    with pytest.raises(UserInputError, match=r"no preference pairs to learn from.*\(people\)"):
        reward.run(make_context(spec))


def test_prompt_batches_keep_each_prompt_whole_and_replay_by_epoch() -> None:
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 1 + ["d"] * 3 + ["e"] * 2
    sampler = reward.PromptBatches(groups, batch_size=5, seed=0)
    assert sampler.prompts_per_batch == 2  # 12 pairs on 5 prompts: ~2.4 a prompt
    first = list(sampler)
    assert len(first) == len(sampler) == 3
    assert sorted(i for batch in first for i in batch) == list(range(12))
    for batch in first:
        assert all(groups[i] not in {groups[j] for other in first if other is not batch for j in other}
                   for i in batch)  # no prompt split across batches
    assert list(sampler) == first  # the same epoch replays the same order
    sampler.set_epoch(1)
    assert len(list(sampler)) == 3 and list(sampler) != first


def test_held_out_figures_count_every_pair_once() -> None:
    chosen, rejected = [2.0, 1.0, 0.0, 3.0], [1.0, 1.0, 1.0, -1.0]
    metrics = reward.held_out_metrics(chosen, rejected, ["alice", "alice", "judge:demo", "my team/bob"])
    assert metrics["accuracy"] == 0.5  # 2 of 4: an equal score is no agreement
    assert metrics["accuracy_people"] == pytest.approx(2 / 3)
    assert metrics["accuracy/alice"] == 0.5 and metrics["accuracy/judge:demo"] == 0.0
    assert metrics["accuracy/my_team_bob"] == 1.0
    assert metrics["margin"] == pytest.approx(1.0) and metrics["reward_chosen"] == 1.5
    assert (metrics["min_reward"], metrics["max_reward"]) == (-1.0, 3.0)
    assert "accuracy_people" not in reward.held_out_metrics([1.0], [0.0], ["judge:demo"])


def test_specs_say_what_is_missing_or_wrong(tmp_path: Path) -> None:
    from engine.errors import SpecError
    from engine.spec.pipeline import parse_spec

    def problems(tables: str) -> str:
        text = '[stages.sample]\nkind = "sample"\nfrom = "builtin:llama-1m"\n' + tables
        with pytest.raises(SpecError) as error:
            parse_spec(text, source="t.toml", base_dir=tmp_path)
        return str(error.value)

    assert "stage 'reward', field 'from': missing; this field is required" in problems(
        '[stages.reward]\nkind = "reward"\nbatches = ["b"]\n')
    assert "`preferences`" in problems('[stages.reward]\nkind = "reward"\nfrom = "builtin:llama-1m"\n')
    assert "not a built-in preset" in problems(
        '[stages.score]\nkind = "score"\nfrom = "builtin:llama-1m"\nbatch = "b"\n')
    assert "one of them" in problems('[stages.score]\nkind = "score"\nfrom = "hub:org/rm"\n')
    spec = parse_spec('[stages.sample]\nkind = "sample"\nfrom = "builtin:llama-1m"\n'
                      '[stages.score]\nkind = "score"\nfrom = "hub:org/rm"\nsamples = "sample"\n',
                      source="t.toml", base_dir=tmp_path)
    assert spec.stages["score"].samples == "stage:sample"

# --- the score stage --------------------------------------------------------------


@pytest.mark.slow  # shares one ~20-40 s reward stage
def test_the_score_stage_stores_scores_and_measures_agreement(trained, shared_cache: Path) -> None:
    ws, trained_ctx, _ = trained
    store = ws.store
    # A new batch on prompts the reward model never saw, ranked like the training one.
    tasks = generate_tasks(9, seed=5, split="heldout")
    ids = store.add_prompts([{"text": t.prompt} for t in tasks])
    batch = store.create_sample_batch(name="fresh", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": r}
                       for pid, t in zip(ids, tasks) for r in responses(t.reference)])
    feedback = store.feedback
    feedback.items_from_batch(batch_id=batch.id, needed=2)  # a person and a judge each
    for annotator in ("alice", "judge:demo"):
        while (item := feedback.next_item(batch_id=batch.id, annotator=annotator)) is not None:
            feedback.judge(item_id=item.id, annotator=annotator, outcome="ranking", shown=item.shown,
                           ranking=sorted(item.shown))

    from store import NewStage

    spec = ScoreSpec(from_=f"path:{trained_ctx.final_dir}", batch="fresh", batch_size=8)
    run = store.create_run(name="s", spec_text="", spec={}, spec_path=None,
                           stages=[NewStage(name="score", kind="score", position=0, parent=None, config={})])
    stage = store.list_stages(run_id=run.id)[0]
    ctx = StageContext(store=store, run_id=run.id, stage_id=stage.id, stage_name="score", spec=spec,
                       output_dir=ws.stage_dir(run.id, "score"), cache_dir=shared_cache, stage_outputs={})
    score.run(ctx)

    scorer = str(trained_ctx.final_dir)
    samples = store.list_samples(batch_id=batch.id)
    stored = store.scores.values_for([s.id for s in samples], scorer=scorer)
    assert len(stored) == 27
    # The same scores plain transformers gives, within batching's rounding.
    assert [stored[s.id] for s in samples] == pytest.approx(
        scores_of(trained_ctx.final_dir, [(s.prompt, s.response) for s in samples]), abs=1e-4)

    summary = batch_scores(store, batch_id=batch.id, scorer=scorer)
    assert summary.people.pairs == summary.judges.pairs == 27  # 9 rankings of 3 each
    assert summary.people.share >= 0.8 and summary.by_annotator["alice"] == summary.people
    manifest = json.loads((ctx.final_dir / "manifest.json").read_text())
    assert manifest["agreement"]["people"]["share"] == summary.people.share
    assert series(store, ctx, "score/agreement_people") == [(0, summary.people.share)]

    # Again: nothing left to score, nothing written twice.
    score.run(ctx)
    assert len(store.scores.scores_for([s.id for s in samples])) == 27
