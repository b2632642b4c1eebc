"""Annotator quality on a small constructed batch: gold accuracy, pace, skips, and the stage's filter."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import UserInputError
from engine.feedback.quality import Verdict, annotator_quality, below_gold, gold_pairs_agreeing
from engine.feedback.stored.gold import batch_quality, mark_gold
from engine.feedback.stored.selection import Selection, selected_live
from store import JudgementOutcome, Store


def batch_of(store: Store, answers: list[tuple[str, str, str]]) -> tuple[int, list[int]]:
    """One pair item per (prompt, right, wrong); returns the batch and its item ids."""
    prompt_ids = store.add_prompts([{"text": prompt} for prompt, _, _ in answers])
    batch = store.create_sample_batch(name="gold", settings={}, sources=[])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": text}
                       for pid, (_, right, wrong) in zip(prompt_ids, answers, strict=True) for text in (right, wrong)])
    store.feedback.items_from_batch(batch_id=batch.id, needed=3)
    return batch.id, [item.id for item in store.feedback.batch_items(batch_id=batch.id)]


ANSWERS = [("What is 1 + 2?", "3", "9"), ("What is 2 + 2?", "4", "I do not know."),
           ("What is 3 + 2?", "5", "1"), ("What is 4 + 1?", "5", "2")]


def say(store: Store, item_id: int, annotator: str, right: bool | None, seconds: float) -> None:
    """Judge an item: the right answer better (True), the wrong one (False), skip (None)."""
    item = store.feedback.get_item(item_id=item_id, annotator=annotator)
    if right is None:
        store.feedback.judge(item_id=item_id, annotator=annotator, outcome=JudgementOutcome.SKIPPED,
                             shown=item.shown, seconds=seconds)
        return
    right_id = min(item.shown)  # the right answer was written first
    a_is_right = item.shown[0] == right_id
    outcome = JudgementOutcome.A_BETTER if a_is_right == right else JudgementOutcome.B_BETTER
    store.feedback.judge(item_id=item_id, annotator=annotator, outcome=outcome, shown=item.shown, seconds=seconds)


def test_gold_accuracy_pace_skips_and_the_filter(store: Store) -> None:
    batch, items = batch_of(store, ANSWERS)
    for item_id in items[:2]:  # gold: the right answer better
        sample_ids = store.feedback.get_item(item_id=item_id, annotator="lead").shown
        store.feedback.set_gold(item_id=item_id, ranking=sorted(sample_ids))
    # the annotator's view of a gold item says nothing about it
    view = store.feedback.get_item(item_id=items[0], annotator="alice")
    assert not any("gold" in field.name for field in dataclasses.fields(view))

    for item_id in items:
        say(store, item_id, "alice", True, 4.0)
    say(store, items[0], "bob", False, 2.0)  # wrong on both gold items
    say(store, items[1], "bob", False, 2.0)
    say(store, items[2], "bob", True, 6.0)
    say(store, items[3], "bob", None, 1.0)
    say(store, items[2], "carol", True, 3.0)  # judged no gold item

    quality = {q.annotator: q for q in batch_quality(store, [batch])}
    assert quality["alice"].gold_accuracy == 1.0 and quality["alice"].gold_verdicts == 2
    assert quality["bob"].gold_accuracy == 0.0
    assert quality["carol"].gold_accuracy is None
    assert quality["bob"].verdicts == 3 and quality["bob"].skip_share == 0.25
    assert quality["bob"].median_seconds == 2.0 and quality["alice"].median_seconds == 4.0
    # agreement with the others: bob disagrees with alice on 2 of his 3 items, carol agrees with both
    assert quality["carol"].agreement == 1.0
    assert quality["bob"].agreement == pytest.approx(2 / 4)  # item 3: alice, carol agree; items 1, 2: alice not

    kept = selected_live(store, Selection(batches=(str(batch),), min_gold_accuracy=0.8))
    assert {j.annotator for j in kept} == {"alice", "carol"}
    everyone = selected_live(store, Selection(batches=(str(batch),)))
    assert {j.annotator for j in everyone} == {"alice", "bob", "carol"}


def test_a_judge_marks_a_share_of_the_batch_gold_without_judging_it(store: Store) -> None:
    batch, _ = batch_of(store, ANSWERS)
    assert mark_gold(store, batch, share=0.5, judge="demo") == 2
    gold = [item for item in store.feedback.batch_items(batch_id=batch) if item.gold is not None]
    assert len(gold) == 2
    for item in gold:  # the judge's answer: the right response (written first) better
        assert item.gold == sorted(item.sample_ids)
    assert store.feedback.live_judgements(batch_ids=[batch]) == []  # still unjudged: goes to people
    assert mark_gold(store, batch, share=0.5, judge="demo") == 2  # already there: nothing more
    with pytest.raises(UserInputError, match="judge or from a lead"):
        mark_gold(store, batch, share=0.5)


def test_ties_and_both_bad_on_gold_count_as_wrong() -> None:
    gold = ((1,), (2,))
    assert gold_pairs_agreeing(gold, ((1,), (2,))) == (1, 1)
    assert gold_pairs_agreeing(gold, ()) == (0, 1)  # a tie or both bad orders nothing
    rows = annotator_quality([
        Verdict("a", "both_bad", (), gold, 1.0), Verdict("a", "a_better", ((1,), (2,)), gold, 3.0),
        Verdict("a", "skipped", (), gold, None),
    ])
    assert rows[0].gold_accuracy == 0.5 and rows[0].both_bad_share == pytest.approx(1 / 3)
    assert below_gold(rows, 0.6) == {"a"} and below_gold(rows, 0.5) == set()
