"""The rejection stage against a real store: from a batch of K answers per
demo prompt, scored by the demo judge or by a reward model's stored scores,
it keeps the best per prompt (none below the threshold), stores them as a
batch whose answers say why, and writes what an sft stage reads. No model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.demo import task as demo_task
from engine.errors import SpecError, StageFailed
from engine.spec import parse_spec
from engine.stages.common.context import Source
from engine.stages.common.data_loading import instruction_examples, load_records
from engine.stages.rejection import stage as rejection
from engine.stages.rejection.spec import RejectionSpec


def answered_batch(store, prompts: int = 4) -> tuple[int, list[int]]:
    """Per demo prompt three answers: a refusal, the right answer, the right answer again (a tie)."""
    tasks = demo_task.generate_tasks(prompts, seed=3)
    ids = store.add_prompts([{"text": t.prompt} for t in tasks])
    batch = store.create_sample_batch(name="answers", settings={}, sources=["policy"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": response, "checkpoint": "policy"}
                       for pid, task in zip(ids, tasks) for response in ("I do not know.", task.reference,
                                                                          task.reference)])
    return batch.id, ids


def test_the_judge_picks_the_best_answer_per_prompt(make_context, workspace) -> None:
    store = workspace.store
    batch_id, prompt_ids = answered_batch(store)
    ctx = make_context(RejectionSpec(batch="answers", judge="demo"))
    rejection.run(ctx)

    rows = [json.loads(line) for line in (ctx.final_dir / rejection.CHOSEN_FILE).read_text().splitlines()]
    samples = store.list_samples(batch_id=batch_id)
    right = [s for s in samples if s.response != "I do not know."]
    # The right answer wins; of the two equal ones, the first generated (lower sample id).
    assert [r["sample_id"] for r in rows] == [s.id for s in right][::2]
    assert all(r["score"] == 1.0 and r["why"] == "best of 3 by judge:demo: 1, next best 1" for r in rows)

    # Stored as a batch of their own, each answer saying why it was chosen.
    [chosen_batch] = [b for b in store.list_sample_batches(run_id=ctx.run_id) if b.stage_id == ctx.stage_id]
    stored = store.list_samples(batch_id=chosen_batch.id)
    assert [s.prompt_id for s in stored] == prompt_ids
    assert [s.meta["chosen_from"] for s in stored] == [r["sample_id"] for r in rows]
    assert stored[0].meta["why"] == rows[0]["why"] and stored[0].checkpoint == "policy"
    keys = set(store.stage_metric_keys(stage_id=ctx.stage_id))
    assert {"rejection/prompts_kept", "rejection/mean_chosen_score"} <= keys

    # What an sft stage reads from `data = "THIS STAGE"`: prompt / completion rows.
    records = load_records(Source("path", str(ctx.final_dir)), cache_dir=ctx.cache_dir)
    form, examples = instruction_examples(records)
    assert form == "prompt_completion" and len(examples) == len(prompt_ids)


def test_a_reward_models_stored_scores_and_the_threshold(make_context, workspace) -> None:
    store = workspace.store
    batch_id, prompt_ids = answered_batch(store)
    samples = store.list_samples(batch_id=batch_id)
    # Each prompt's third answer scores highest; the first prompt's best is 0.3, below the bar.
    values = {s.id: (0.1 if s.prompt_id == prompt_ids[0] else 1.0) * (1 + i % 3) for i, s in enumerate(samples)}
    store.scores.add_scores(scorer="rm", values=values)
    ctx = make_context(RejectionSpec(batch=str(batch_id), scorer="rm", threshold=0.5))
    rejection.run(ctx)
    rows = [json.loads(line) for line in (ctx.final_dir / rejection.CHOSEN_FILE).read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == [s.id for s in samples][5::3]
    assert rows[0]["why"] == "best of 3 by rm: 3, next best 2"
    assert workspace.store.metric_series(stage_id=ctx.stage_id, key="rejection/prompts_left_out")[0].value == 1
    with pytest.raises(StageFailed, match="no prompt has an answer scoring at least 100"):
        rejection.run(make_context(RejectionSpec(batch=str(batch_id), scorer="rm", threshold=100)))


@pytest.mark.parametrize(("table", "expected"), [
    ('judge = "demo"', "name the answers: `samples` (a stage) or `batch`"),
    ('batch = "b"', "a stored batch needs what scores it"),
    ('batch = "b"\njudge = "demo"\nscorer = "rm"', "`judge` and `scorer`: set only one of them"),
    ('batch = "b"\njudge = "demo"\nrankings = true', "`judge` and `rankings`: set only one of them"),
    ('batch = "b"\njudge = "my judge"', "is neither `demo` nor a Python callable"),
])
def test_a_rejection_stage_needs_answers_and_one_scorer(table: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(f'[stages.r]\nkind = "rejection"\n{table}\n', source="t.toml", base_dir=tmp_path)
    [line] = info.value.problems
    assert expected in line, line


def test_the_console_shows_why_an_answer_was_chosen(make_context, workspace) -> None:
    from console.view_models import SampleGroup, load_samples
    from console.widgets.samples_view import render_samples

    answered_batch(workspace.store, prompts=1)
    ctx = make_context(RejectionSpec(batch="answers", judge="demo"))
    rejection.run(ctx)
    [batch] = [b for b in workspace.store.list_sample_batches(run_id=ctx.run_id) if b.stage_id == ctx.stage_id]
    shown = render_samples(load_samples(workspace.store, SampleGroup(id="c", label="c", batch_id=batch.id))).plain
    assert "chosen: best of 3 by judge:demo: 1, next best 1\n" in shown
    assert "why=" not in shown and "candidates=3" in shown


def test_people_s_rankings_choose(make_context, workspace) -> None:
    store = workspace.store
    batch_id, _ = answered_batch(store, prompts=2)
    feedback = store.feedback
    feedback.items_from_batch(batch_id=batch_id, needed=1)
    # alice ranks the answers in the order they were written, except the refusal last.
    while (item := feedback.next_item(batch_id=batch_id, annotator="alice")) is not None:
        refusal, *right = sorted(item.shown)
        feedback.judge(item_id=item.id, annotator="alice", outcome="ranking", shown=item.shown,
                       ranking=[*right, refusal])
    ctx = make_context(RejectionSpec(batch=str(batch_id), rankings=True, threshold=0.6))
    rejection.run(ctx)
    rows = [json.loads(line) for line in (ctx.final_dir / rejection.CHOSEN_FILE).read_text().splitlines()]
    samples = store.list_samples(batch_id=batch_id)
    assert [r["sample_id"] for r in rows] == [samples[1].id, samples[4].id]  # each prompt's first right answer
    assert rows[0]["why"] == "best of 3 by people's rankings: 1, next best 0.5"
