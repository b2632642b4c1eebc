"""A batch served in active order, through the store: shared order, claims, an annotator process killed mid-item."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from engine.demo.task import judge_score
from engine.feedback.active import OrderItem, active_order
from engine.feedback.stored.active_order import ActiveRanker, is_heldout
from engine.feedback.stored.active_state import read_state
from engine.feedback.stored.gold import import_gold
from engine.runtime.launcher import child_env
from engine.stages.rank.spec import RankSpec
from store import JudgementOutcome, Store, Workspace


def demo_batch(store: Store, prompts: int = 6) -> int:
    """Pairs of answers to demo prompts, one right and one wrong, as rank items."""
    texts = [f"What is {a} + {a + 1}?" for a in range(1, prompts + 1)]
    prompt_ids = store.add_prompts([{"text": t} for t in texts])
    batch = store.create_sample_batch(name="pairs", settings={}, sources=["written"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": answer}
                       for pid, a in zip(prompt_ids, range(1, prompts + 1), strict=True)
                       for answer in (str(2 * a + 1), f"{2 * a + 1}. Hope this helps!")])
    store.feedback.items_from_batch(batch_id=batch.id)
    return batch.id


def judge_item(store: Store, item_id: int, annotator: str) -> None:
    item = store.feedback.get_item(item_id=item_id, annotator=annotator)
    a, b = (r.text for r in item.responses)
    outcome = JudgementOutcome.A_BETTER if judge_score(item.prompt, a) > judge_score(item.prompt, b) \
        else JudgementOutcome.B_BETTER
    store.feedback.judge(item_id=item.id, annotator=annotator, outcome=outcome, shown=item.shown, seconds=1.0)


def test_the_stored_order_is_shared_and_no_two_annotators_hold_one_item(store: Store) -> None:
    batch = demo_batch(store)
    ids = [item.id for item in store.feedback.batch_items(batch_id=batch)]
    order = [ids[3], ids[0], ids[5], ids[1], ids[4], ids[2]]
    store.feedback.set_serve_order(batch_id=batch, item_ids=order)

    alice = store.feedback.next_item(batch_id=batch, annotator="alice")
    bob = store.feedback.next_item(batch_id=batch, annotator="bob")
    assert alice is not None and bob is not None
    assert (alice.id, bob.id) == (order[0], order[1])  # the stored order, each their own item
    judge_item(store, alice.id, "alice")
    # alice's next is the first item no one holds or has judged, whatever position she was at
    following = store.feedback.next_item(batch_id=batch, annotator="alice", after_position=alice.position)
    assert following is not None and following.id == order[2]


#: An annotator's process, as the rank screen drives it: the engine's annotation session (the screen's
#: only way to the store), two verdicts, then the third item on screen when the process is killed.
ANNOTATOR = """\
import sys, time
from engine import Engine
from engine.demo.task import judge_score
from store import JudgementOutcome
engine = Engine(sys.argv[1])
session = engine.annotation.session(batch_id=int(sys.argv[2]), annotator="alice")
for _ in range(2):
    item = session.next_item()
    a, b = (r.text for r in item.responses)
    better_a = judge_score(item.prompt, a) > judge_score(item.prompt, b)
    session.judge(item, JudgementOutcome.A_BETTER if better_a else JudgementOutcome.B_BETTER, seconds=1.0)
    print("judged", item.id, flush=True)
held = session.next_item()
print("holding", held.id, flush=True)
time.sleep(600)  # on screen, undecided, when the process is killed
"""


@pytest.mark.timeout(120)
def test_an_annotator_process_killed_mid_item_loses_no_verdict_and_the_order_goes_on(
        workspace: Workspace, tmp_path: Path) -> None:
    store = workspace.store
    batch = demo_batch(store)
    ids = [item.id for item in store.feedback.batch_items(batch_id=batch)]
    order = [ids[4], ids[1], ids[5], ids[0], ids[3], ids[2]]  # as an active ranker would have stored it
    store.feedback.set_serve_order(batch_id=batch, item_ids=order)
    script = tmp_path / "annotator.py"
    script.write_text(ANNOTATOR)
    process = subprocess.Popen([sys.executable, str(script), str(workspace.root), str(batch)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().split() for _ in range(3)]
        assert [line[0] for line in lines] == ["judged", "judged", "holding"], process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)  # the process this test started
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    judged, held = [int(line[1]) for line in lines[:2]], int(lines[2][1])
    assert judged == order[:2] and held == order[2]  # served in the stored order

    live = store.feedback.live_judgements(batch_ids=[batch])
    assert sorted(j.item_id for j in live) == sorted(judged)  # both verdicts on disk, nothing half-written
    assert all(j.annotator == "alice" and j.ranking for j in live)
    bob = store.feedback.next_item(batch_id=batch, annotator="bob")
    assert bob is not None and bob.id == order[3]  # the stored order goes on; alice's claim holds order[2]
    back = store.feedback.next_item(batch_id=batch, annotator="alice")
    assert back is not None and back.id == held  # alice, back, gets the item she had on screen


def test_the_ranker_stores_the_rules_order_and_its_state(store: Store) -> None:
    batch = demo_batch(store, prompts=10)
    ranker = ActiveRanker(store.feedback, batch, members=3, seed=0)
    state = ranker.refresh()
    assert state.judgements == 0 and state.heldout_accuracy is None
    items = store.feedback.batch_items(batch_id=batch)
    # before any judgement every head is zero: all tie, so batch order
    assert [i.id for i in sorted(items, key=lambda i: i.serve_rank or 0)] == [i.id for i in items]

    for item in items[:8]:
        judge_item(store, item.id, "alice")
    state = ranker.refresh()
    assert state.judgements == 8
    assert (state.heldout_accuracy is not None) == any(is_heldout(i.id) for i in items[:8])
    stored = sorted(store.feedback.batch_items(batch_id=batch), key=lambda i: i.serve_rank or 0)
    open_items = [OrderItem(id=i.id, position=i.position, rows=tuple(ranker.row[s] for s in i.sample_ids))
                  for i in items[8:]]
    expected = active_order(ranker.ensemble, ranker.features, open_items)
    assert [i.id for i in stored[:2]] == expected  # the open items first, in the rule's order
    assert read_state(store.feedback, batch) == state  # what the rank screen reads
    served = store.feedback.next_item(batch_id=batch, annotator="bob")
    assert served is not None and served.id == expected[0]


def test_refresh_every_needs_the_active_order() -> None:
    assert RankSpec.model_validate({"batch": "b", "order": "active", "refresh_every": 5}).refresh_every == 5
    with pytest.raises(pydantic.ValidationError, match='refresh_every re-orders an active batch: set order = "active"'):
        RankSpec.model_validate({"batch": "b", "refresh_every": 5})


def test_gold_mixed_into_a_batch_while_its_ranker_runs_is_ordered_at_the_next_refresh(
        store: Store, tmp_path: Path) -> None:
    batch = demo_batch(store, prompts=6)
    ranker = ActiveRanker(store.feedback, batch, members=3, seed=0)
    ranker.refresh()
    for item in store.feedback.batch_items(batch_id=batch)[:2]:
        judge_item(store, item.id, "alice")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt": f"What is {a} + {a}?", "chosen": str(2 * a), "rejected": "seven"})
                            + "\n" for a in (20, 30)))
    added = import_gold(store, batch, gold, seed=0).item_ids

    state = ranker.refresh()  # the new responses get their features here
    assert state.judgements == 2
    served = [i.id for i in sorted(store.feedback.batch_items(batch_id=batch), key=lambda i: i.serve_rank or 0)]
    assert set(added) <= set(served[:6])  # placed among the open items, by the rule like the others
