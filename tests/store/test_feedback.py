"""The human-feedback store: serving items, judgements, undo, claims, progress."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from store import (
    CLAIM_TTL,
    FeedbackError,
    JudgementOutcome,
    Store,
    open_workspace,
    shown_order,
    utcnow,
)
from store.models import ItemClaim


def make_batch(store: Store, prompts: int = 3, k: int = 2, name: str = "batch") -> int:
    """A sample batch with k responses to each prompt, written by two checkpoints in turn."""
    prompt_ids = store.add_prompts([{"text": f"prompt {i} [b]markup[/b]"} for i in range(prompts)])
    batch = store.create_sample_batch(name=name, settings={"temperature": 0.8}, sources=["ckpt-a", "ckpt-b"])
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": f"answer {j} to {pid}",
         "checkpoint": "ckpt-a" if j % 2 == 0 else "ckpt-b"}
        for pid in prompt_ids for j in range(k)
    ])
    return batch.id


def test_a_batch_becomes_one_item_per_prompt_and_is_served_in_order(store: Store) -> None:
    batch = make_batch(store, prompts=3, k=4)
    assert store.feedback.items_from_batch(batch_id=batch) == 3
    assert store.feedback.items_from_batch(batch_id=batch) == 3  # idempotent

    first = store.feedback.next_item(batch_id=batch, annotator="ann")
    assert first is not None and first.position == 0 and len(first.responses) == 4
    assert first.prompt == "prompt 0 [b]markup[/b]"
    assert first.shown == shown_order(first.id, "ann", sorted(first.shown))  # the annotator's own shuffle
    # The same item is not served again while it is on this annotator's screen (prefetch excludes it).
    second = store.feedback.next_item(batch_id=batch, annotator="ann", after_position=first.position,
                                      exclude=[first.id])
    assert second is not None and second.position == 1


def test_positions_are_shuffled_per_annotator_and_stable() -> None:
    orders = {tuple(shown_order(item, "ann", [1, 2])) for item in range(40)}
    assert orders == {(1, 2), (2, 1)}  # both sides happen
    assert shown_order(7, "ann", [1, 2, 3, 4]) == shown_order(7, "ann", [1, 2, 3, 4])


def test_judge_records_the_shown_order_and_the_ranking(store: Store) -> None:
    batch = make_batch(store, prompts=1, k=2)
    store.feedback.items_from_batch(batch_id=batch)
    item = store.feedback.next_item(batch_id=batch, annotator="ann")
    assert item is not None
    row = store.feedback.judge(item_id=item.id, annotator="ann", outcome="b_better", shown=item.shown,
                               seconds=2.5, comment="B is exact")
    assert row.shown == item.shown and row.ranking == list(reversed(item.shown))
    assert store.feedback.next_item(batch_id=batch, annotator="ann") is None  # nothing left for them
    [live] = store.feedback.live_judgements(batch_ids=[batch])
    assert live.outcome == "b_better" and live.comment == "B is exact" and live.seconds == 2.5
    assert live.responses[live.ranking[0]].text.startswith("answer")
    assert store.feedback.progress(batch_id=batch, annotator="ann").mine == 1


def test_bad_judgements_are_refused(store: Store) -> None:
    batch = make_batch(store, prompts=1, k=3)
    store.feedback.items_from_batch(batch_id=batch)
    item = store.feedback.next_item(batch_id=batch, annotator="ann")
    assert item is not None
    with pytest.raises(FeedbackError, match="rank them"):
        store.feedback.judge(item_id=item.id, annotator="ann", outcome="a_better", shown=item.shown)
    with pytest.raises(FeedbackError, match="must order all"):
        store.feedback.judge(item_id=item.id, annotator="ann", outcome="ranking", shown=item.shown,
                             ranking=item.shown[:2])
    with pytest.raises(FeedbackError, match="not the item's"):
        store.feedback.judge(item_id=item.id, annotator="ann", outcome="tie", shown=[999, 998, 997])
    assert store.feedback.judgements(batch_id=batch) == []


def test_undo_and_edits_append_and_never_lose_a_row(store: Store) -> None:
    batch = make_batch(store, prompts=2, k=2)
    store.feedback.items_from_batch(batch_id=batch)
    item = store.feedback.next_item(batch_id=batch, annotator="ann")
    assert item is not None
    store.feedback.judge(item_id=item.id, annotator="ann", outcome="a_better", shown=item.shown)
    withdrawn = store.feedback.undo(batch_id=batch, annotator="ann")
    assert withdrawn is not None and withdrawn.item_id == item.id
    assert store.feedback.live_judgements(batch_ids=[batch]) == []
    assert store.feedback.progress(batch_id=batch).done == 0
    # The undone item is served again, first.
    again = store.feedback.next_item(batch_id=batch, annotator="ann")
    assert again is not None and again.id == item.id
    store.feedback.judge(item_id=item.id, annotator="ann", outcome="tie", shown=again.shown)
    store.feedback.comment(item_id=item.id, annotator="ann", comment="both fine", flags=["unsure"])
    store.feedback.judge(item_id=item.id, annotator="ann", outcome="b_better", shown=again.shown)  # an edit

    rows = store.feedback.judgements(batch_id=batch)
    assert [r.outcome for r in rows] == ["a_better", "undone", "tie", "tie", "b_better"]
    [live] = store.feedback.live_judgements(batch_ids=[batch])
    assert live.outcome == "b_better"
    assert store.feedback.progress(batch_id=batch).done == 1  # one verdict, however many edits


def test_skips_count_for_the_annotator_not_the_item(store: Store) -> None:
    batch = make_batch(store, prompts=1, k=2)
    store.feedback.items_from_batch(batch_id=batch)
    item = store.feedback.next_item(batch_id=batch, annotator="ann")
    assert item is not None
    store.feedback.judge(item_id=item.id, annotator="ann", outcome="skipped", shown=item.shown)
    assert store.feedback.next_item(batch_id=batch, annotator="ann") is None
    assert store.feedback.progress(batch_id=batch).done == 0
    assert store.feedback.next_item(batch_id=batch, annotator="bob") is not None


def test_an_item_needing_two_goes_to_two_different_annotators(store: Store) -> None:
    batch = make_batch(store, prompts=1, k=2)
    store.feedback.items_from_batch(batch_id=batch, needed=2)
    a = store.feedback.next_item(batch_id=batch, annotator="ann")
    b = store.feedback.next_item(batch_id=batch, annotator="bob")
    assert a is not None and b is not None and a.id == b.id
    assert store.feedback.next_item(batch_id=batch, annotator="cat") is None  # both verdicts are claimed
    store.feedback.judge(item_id=a.id, annotator="ann", outcome="a_better", shown=a.shown)
    assert store.feedback.next_item(batch_id=batch, annotator="ann") is None  # never twice to one person


def test_claims_expire_and_can_be_released(store: Store) -> None:
    batch = make_batch(store, prompts=1, k=2)
    store.feedback.items_from_batch(batch_id=batch)
    assert store.feedback.next_item(batch_id=batch, annotator="ann") is not None
    assert store.feedback.next_item(batch_id=batch, annotator="bob") is None
    store.feedback.release(annotator="ann")
    assert store.feedback.next_item(batch_id=batch, annotator="bob") is not None
    # bob's console died holding the item: after the claim's lifetime, ann gets it.
    with store.engine.begin() as connection:
        connection.execute(update(ItemClaim).values(claimed_at=utcnow() - CLAIM_TTL - timedelta(seconds=1)))
    assert store.feedback.next_item(batch_id=batch, annotator="ann") is not None


def test_live_judgements_select_by_annotator_and_prefix(store: Store) -> None:
    batch = make_batch(store, prompts=3, k=2)
    store.feedback.items_from_batch(batch_id=batch, needed=2)
    for annotator in ("ann", "judge:demo"):
        while (item := store.feedback.next_item(batch_id=batch, annotator=annotator)) is not None:
            store.feedback.judge(item_id=item.id, annotator=annotator, outcome="a_better", shown=item.shown)
    assert len(store.feedback.live_judgements(batch_ids=[batch])) == 6
    assert len(store.feedback.live_judgements(annotators=["ann"])) == 3
    assert len(store.feedback.live_judgements(annotator_prefixes=["judge:"])) == 3
    assert store.feedback.live_judgements(since=utcnow() + timedelta(hours=1)) == []
    progress = store.feedback.progress(batch_id=batch)
    assert (progress.items, progress.total, progress.done, progress.annotators) == (3, 6, 6, 2)
    [listed] = store.feedback.rank_batches()
    assert (listed.id, listed.items, listed.done) == (batch, 3, 6)


def _rank_everything(workspace_dir: str, batch: int, annotator: str, queue) -> None:  # type: ignore[no-untyped-def]
    ws = open_workspace(Path(workspace_dir))
    judged = []
    while (item := ws.store.feedback.next_item(batch_id=batch, annotator=annotator)) is not None:
        ws.store.feedback.judge(item_id=item.id, annotator=annotator, outcome="a_better", shown=item.shown)
        judged.append(item.id)
    ws.close()
    queue.put((annotator, judged))


@pytest.mark.slow  # two spawned interpreters
def test_two_annotators_in_two_processes_lose_nothing_and_never_repeat(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    batch = make_batch(ws.store, prompts=60, k=2)
    ws.store.feedback.items_from_batch(batch_id=batch, needed=2)
    ws.close()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_rank_everything, args=(str(tmp_path / "ws"), batch, name, queue))
               for name in ("ann", "bob")]
    for worker in workers:
        worker.start()
    results = dict(queue.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    for annotator, judged in results.items():
        assert len(judged) == len(set(judged)) == 60, annotator  # each item once per person, all of them
    ws = open_workspace(tmp_path / "ws")
    assert len(ws.store.feedback.live_judgements(batch_ids=[batch])) == 120
    assert ws.store.feedback.progress(batch_id=batch).done == 120
    ws.close()


def test_outcome_values_are_stable() -> None:
    # Stored as strings: renaming one would orphan every judgement already made.
    assert [o.value for o in JudgementOutcome] == [
        "a_better", "b_better", "tie", "both_bad", "ranking", "skipped", "undone"]
