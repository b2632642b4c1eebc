"""The rank stage through the engine: a judge ranks a batch; people are waited for."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine, RunFinished, SpecError, UserInputError, parse_spec
from engine.demo.task import generate_tasks, judge_score
from engine.feedback.judges import load_judge
from engine.runtime.jobs import rank_spec
from store import JudgementOutcome, Store


@pytest.fixture
def engine(tmp_path: Path, offline_cpu_env: None, open_engine: Callable[[Path], Engine]) -> Engine:
    return open_engine(tmp_path / "ws")


def demo_batch(store: Store, prompts: int = 6, k: int = 2) -> int:
    """Responses to demo-task prompts: the right answer, a wrong one, and more wrong ones."""
    tasks = generate_tasks(prompts, seed=3, split="heldout")
    ids = store.add_prompts([{"text": t.prompt, "reference": t.reference} for t in tasks])
    batch = store.create_sample_batch(name="demo-batch", settings={}, sources=["good", "bad"])
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": task.reference if j == 0 else f"no idea {j}",
         "checkpoint": "good" if j == 0 else "bad"}
        for pid, task in zip(ids, tasks) for j in range(k)
    ])
    return batch.id


async def finish(engine: Engine, run_id: int) -> RunFinished:
    async for update in engine.follow(run_id, logs=False, metrics=False):
        if isinstance(update, RunFinished):
            return update
    raise AssertionError("follow ended without an outcome")


@pytest.mark.slow  # a real detached run
@pytest.mark.timeout(120)
async def test_the_demo_judge_ranks_a_batch_as_judge_demo(engine: Engine) -> None:
    batch = demo_batch(engine.store, prompts=6, k=3)
    run = await engine.submit(rank_spec(batch, judge="demo"))
    outcome = await finish(engine, run.id)
    assert outcome.status == "succeeded", outcome.error

    live = engine.store.feedback.live_judgements(batch_ids=[batch])
    assert len(live) == 6 and {j.annotator for j in live} == {"judge:demo"}
    for judgement in live:
        assert judgement.outcome == JudgementOutcome.RANKING
        best = judgement.responses[judgement.ranking[0]]
        assert best.checkpoint == "good"  # the right answer ranked first
        assert judge_score(judgement.prompt, best.text) == 1.0
    stage = (await engine.detail(run.id)).stages[0]
    assert stage.device is None  # ranking held no device slot


@pytest.mark.slow  # a real detached run
@pytest.mark.timeout(120)
async def test_a_rank_stage_without_a_judge_waits_for_people(engine: Engine) -> None:
    batch = demo_batch(engine.store, prompts=3, k=2)
    run = await engine.submit(rank_spec(batch, judge=None))
    deadline = time.monotonic() + 60
    while engine.store.feedback.progress(batch_id=batch).items == 0:  # the stage made the items
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert (await engine.get_run(run.id)).status == "running"
    while (item := engine.store.feedback.next_item(batch_id=batch, annotator="ann")) is not None:
        engine.store.feedback.judge(item_id=item.id, annotator="ann", outcome="a_better", shown=item.shown)
    outcome = await finish(engine, run.id)
    assert outcome.status == "succeeded", outcome.error
    detail = await engine.detail(run.id)
    manifest = Path(detail.stages[0].output_path or "") / "manifest.json"
    assert '"judgements": 3' in manifest.read_text()


def test_rank_specs_are_checked() -> None:
    with pytest.raises(SpecError, match="one of them"):
        parse_spec('[stages.r]\nkind = "rank"\n', source="t.toml", base_dir=Path.cwd())
    with pytest.raises(SpecError, match="must name a sample stage"):
        parse_spec('[stages.r]\nkind = "rank"\nfrom = "builtin:demo-prompts"\n', source="t.toml",
                   base_dir=Path.cwd())
    spec = parse_spec('[stages.s]\nkind = "sample"\nfrom = "builtin:llama-1m"\n'
                      '[stages.r]\nkind = "rank"\nfrom = "s"\njudge = "demo"\n', source="t.toml", base_dir=Path.cwd())
    assert spec.dependencies["r"] == ("s",)


def test_judges_are_loaded_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_judges.py").write_text("def longest(prompt, responses):\n    return [len(r) for r in responses]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    judge = load_judge("my_judges:longest")
    assert judge.annotator == "judge:my_judges:longest"
    assert list(judge.score("p", ["a", "abc"])) == [1, 3]
    with pytest.raises(UserInputError, match="module:function"):
        load_judge("not a judge")
    with pytest.raises(UserInputError, match="cannot import"):
        load_judge("no_such_module_xyz:f")
    with pytest.raises(UserInputError, match="no callable"):
        load_judge("my_judges:missing")
    sys.modules.pop("my_judges", None)


def test_store_judgements_become_records_in_shown_order(engine: Engine) -> None:
    from engine.feedback.pairs import preference_pairs
    from engine.feedback.stored.selection import Selection, selected_judgements

    batch = demo_batch(engine.store, prompts=2, k=3)
    engine.store.feedback.items_from_batch(batch_id=batch)
    feedback = engine.store.feedback
    while (item := feedback.next_item(batch_id=batch, annotator="ann")) is not None:
        best_first = sorted(item.shown, key=lambda sid: feedback.get_item(item_id=item.id, annotator="x")
                            .responses[0].sample_id != sid)  # any full order will do
        feedback.judge(item_id=item.id, annotator="ann", outcome="ranking", shown=item.shown, ranking=best_first)
    records = selected_judgements(engine.store, Selection(batches=(str(batch),), annotators="people"))
    assert len(records) == 2
    for record, live in zip(records, feedback.live_judgements(batch_ids=[batch])):
        assert [r.id for r in record.responses] == [str(s) for s in live.shown]
        assert [record.responses[tier[0]].id for tier in record.ranking] == [str(s) for s in live.ranking]
    assert len(preference_pairs(records)) == 6  # C(3,2) per prompt
    assert selected_judgements(engine.store, Selection(annotators="judges")) == []


def test_responses_the_judge_scores_alike_share_a_place_and_state_no_preference(engine: Engine) -> None:
    """Two different wrong answers score the same: the judge ranks them as a
    tie, so the ranking yields the 2 pairs it means, not C(3,2) = 3 with one
    invented; the reward-model agreement counts those 2 too."""
    from engine.feedback.pairs import preference_pairs
    from engine.feedback.stored.auto_rank import auto_rank
    from engine.feedback.stored.selection import Selection, selected_judgements
    from engine.recipe.reward_agreement import agreement
    from store.feedback import ranking_tiers

    batch = demo_batch(engine.store, prompts=2, k=3)  # the reference, "no idea 1", "no idea 2"
    engine.store.feedback.items_from_batch(batch_id=batch)
    assert auto_rank(engine.store.feedback, batch_id=batch, judge=load_judge("demo")) == 2

    for live in engine.store.feedback.live_judgements(batch_ids=[batch]):
        tiers = ranking_tiers(live.ranking)
        assert [len(tier) for tier in tiers] == [1, 2]
        assert live.responses[tiers[0][0]].checkpoint == "good"
        scores = {sid: (1.0 if live.responses[sid].checkpoint == "good" else 0.0) for sid in live.shown}
        assert (agreement(live.ranking, scores).agreed, agreement(live.ranking, scores).pairs) == (2, 2)
    records = selected_judgements(engine.store, Selection(batches=(str(batch),), annotators="judges"))
    pairs = preference_pairs(records)
    assert len(pairs) == 4 and all(judge_score(p.prompt, p.chosen) == 1.0 for p in pairs)
    assert len(preference_pairs(records, ties="margin")) == 4 + 2 * 2  # each tie both ways, margin 0
