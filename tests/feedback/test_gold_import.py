"""Gold items imported from a file: mixed into a constructed batch, hidden from annotators, graded on."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from engine.errors import FeedbackFormatError, UserInputError
from engine.feedback.stored.gold import batch_quality, import_gold
from store import JudgementOutcome, Store
from store.feedback import interleave, ranking_members


def sampled_batch(store: Store, prompts: int) -> tuple[int, list[int]]:
    """One pair item per prompt, the right answer from checkpoint `ckpt/good` and a
    wrong one from `ckpt/bad`, both with token counts as a sample stage writes them."""
    prompt_ids = store.add_prompts([{"text": f"What is {i} + 1?"} for i in range(prompts)])
    batch = store.create_sample_batch(name="sampled", settings={}, sources=["ckpt/good", "ckpt/bad"])
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": text, "checkpoint": checkpoint,
         "meta": {"tokens": tokens, "finished": True}}
        for i, pid in enumerate(prompt_ids)
        for text, checkpoint, tokens in ((str(i + 1), "ckpt/good", 1), ("I am not sure about that one.", "ckpt/bad", 8))
    ])
    store.feedback.items_from_batch(batch_id=batch.id, needed=1)
    return batch.id, [item.id for item in store.feedback.batch_items(batch_id=batch.id)]


def gold_file(folder: Path, pairs: int, name: str = "gold.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps({"prompt": f"Add {i} and 2.", "chosen": str(i + 2), "rejected": "seven"}) + "\n"
                            for i in range(pairs)))
    return path


def answer(store: Store, item_id: int, annotator: str, *, better: str) -> None:
    """Judge an item, preferring the response whose text is `better`."""
    item = store.feedback.get_item(item_id=item_id, annotator=annotator)
    first_is_better = item.responses[0].text == better
    store.feedback.judge(item_id=item_id, annotator=annotator, shown=item.shown,
                         outcome=JudgementOutcome.A_BETTER if first_is_better else JudgementOutcome.B_BETTER)


def counts(store: Store, batch: int) -> tuple[int, int, int]:
    """(items, samples, prompts) in the store: what an import that failed must leave as it was."""
    return (len(store.feedback.batch_items(batch_id=batch)), len(store.list_samples(batch_id=batch)),
            len(store.get_prompts(range(1, 1_000))))


def test_gold_pairs_are_mixed_in_among_the_open_items_with_their_answers(store: Store, tmp_path: Path) -> None:
    batch, items = sampled_batch(store, 12)
    for item_id in items[:4]:  # the first four are judged: closed, nothing goes before them
        answer(store, item_id, "alice", better="1")

    done = import_gold(store, batch, gold_file(tmp_path, 4), seed=3)
    assert (done.records, done.added, done.gold_items, done.items, done.format) == (4, 4, 4, 16, "trl")

    by_position = store.feedback.batch_items(batch_id=batch)
    assert [item.position for item in by_position] == list(range(16))  # still one step apart: "item N of M"
    assert [item.id for item in by_position[:4]] == items[:4]
    gold_positions = [item.position for item in by_position if item.gold is not None]
    assert sorted(item.id for item in by_position if item.gold is not None) == sorted(done.item_ids)
    assert gold_positions != list(range(12, 16))  # not appended in a row at the end
    assert max(gold_positions) - min(gold_positions) >= 6  # spread over the open items
    original = [item.id for item in by_position if item.gold is None]
    assert original == items  # the batch's own items keep their order

    prompts, texts = store.feedback.batch_texts(batch_id=batch)
    for item in by_position:
        if item.gold is None:
            continue
        chosen, rejected = item.gold  # the file's ranking: chosen over rejected
        assert texts[rejected] == "seven" and prompts[item.prompt_id] == f"Add {int(texts[chosen]) - 2} and 2."
        assert item.needed == 1 and item.verdicts == 0
    samples = {s.id: s for s in store.list_samples(batch_id=batch)}
    gold_samples = [samples[sid] for sid in done_sample_ids(store, batch)]
    assert {s.checkpoint for s in gold_samples} == {"gold:gold.jsonl"}  # known as gold in exports and stats
    assert store.feedback.batch_settings(batch_id=batch)["gold_imports"][0]["added"] == 4


def done_sample_ids(store: Store, batch: int) -> list[int]:
    return [sid for item in store.feedback.batch_items(batch_id=batch) if item.gold is not None
            for sid in item.sample_ids]


def test_annotators_see_gold_items_as_they_see_the_batchs_own(store: Store, tmp_path: Path) -> None:
    batch, _ = sampled_batch(store, 6)
    done = import_gold(store, batch, gold_file(tmp_path, 3))
    for item_id in done.item_ids:
        view = store.feedback.get_item(item_id=item_id, annotator="alice")
        assert "gold" not in repr(view)
        # after the vote the rank screen names checkpoints: they are the batch's own
        assert {r.checkpoint for r in view.responses} <= {"ckpt/good", "ckpt/bad"}
        # and its length note counts tokens as for the batch's responses (estimated from their characters per token)
        assert all(isinstance(r.meta["tokens"], int) and r.meta["finished"] is True for r in view.responses)
    # every read but the annotator's view sees the real samples
    live_checkpoints = {s.checkpoint for s in store.list_samples(batch_id=batch)}
    assert "gold:gold.jsonl" in live_checkpoints


def test_gold_accuracy_of_annotators_who_answer_the_imported_items_right_or_wrong(store: Store, tmp_path: Path) -> None:
    batch, items = sampled_batch(store, 6)
    done = import_gold(store, batch, gold_file(tmp_path, 4))
    texts = store.feedback.batch_texts(batch_id=batch)[1]
    for item in store.feedback.batch_items(batch_id=batch):
        right = texts[ranking_members(item.gold)[0]] if item.gold is not None else None
        for annotator in ("right", "wrong"):
            if right is None:
                answer(store, item.id, annotator, better=texts[item.sample_ids[0]])
            else:
                wrong = next(texts[s] for s in item.sample_ids if texts[s] != right)
                answer(store, item.id, annotator, better=right if annotator == "right" else wrong)
    quality = {q.annotator: q for q in batch_quality(store, [batch])}
    assert (quality["right"].gold_accuracy, quality["right"].gold_verdicts) == (1.0, 4)
    assert (quality["wrong"].gold_accuracy, quality["wrong"].gold_verdicts) == (0.0, 4)
    assert len(done.item_ids) == 4 and len(items) == 6


def test_hh_dialogues_from_a_gz_file_read_as_the_batchs_plain_texts(store: Store, tmp_path: Path) -> None:
    batch, _ = sampled_batch(store, 4)
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"chosen": "\n\nHuman: What is 5 + 5?\n\nAssistant: 10",
                                 "rejected": "\n\nHuman: What is 5 + 5?\n\nAssistant: Eleven."}) + "\n")
    done = import_gold(store, batch, path)
    assert (done.format, done.added) == ("hh", 1)
    (item_id,) = done.item_ids
    view = store.feedback.get_item(item_id=item_id, annotator="alice")
    # one message each: shown as its content, as a sampled prompt and response are (no "user:" in front)
    assert view.prompt == "What is 5 + 5?"
    assert sorted(r.text for r in view.responses) == ["10", "Eleven."]


def test_share_caps_how_many_pairs_go_in(store: Store, tmp_path: Path) -> None:
    batch, _ = sampled_batch(store, 10)
    path = gold_file(tmp_path, 6)
    # 2 of 12 items is 17% of gold; 3 of 13 would be 23%, over 20%
    assert import_gold(store, batch, path, share=0.2).added == 2
    again = import_gold(store, batch, path, share=0.2)
    assert (again.added, again.gold_items, again.items) == (0, 2, 12)
    rest = import_gold(store, batch, path)  # no share: every pair not yet in the batch
    assert (rest.added, rest.in_batch, rest.gold_items) == (4, 2, 6)
    assert import_gold(store, batch, path).added == 0  # all six are items of the batch now
    with pytest.raises(UserInputError, match="share"):
        import_gold(store, batch, path, share=1.5)


def test_a_bad_line_names_file_and_line_and_adds_nothing(store: Store, tmp_path: Path) -> None:
    batch, _ = sampled_batch(store, 4)
    before = counts(store, batch)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                   + json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    with pytest.raises(FeedbackFormatError) as error:
        import_gold(store, batch, bad)
    assert error.value.problems == [f"{bad}:2: no 'rejected' field; expected a string or a list of {{role, content}} "
                                    "messages"]
    # records that fit the file format but cannot be gold: equal responses, no order, another size
    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text("\n".join(json.dumps(record) for record in (
        {"prompt": "p", "chosen": "same", "rejected": "same"},
    )) + "\n")
    with pytest.raises(FeedbackFormatError, match=rf"{ranked}:1: two responses are the same text"):
        import_gold(store, batch, ranked)
    table = tmp_path / "table.jsonl"
    table.write_text("\n".join(json.dumps(record) for record in (
        {"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1]},
        {"prompt": "p", "responses": ["a", "b"], "ranking": [[0, 1]]},
        {"prompt": "p", "responses": ["a", "b", "c"]},
    )) + "\n")
    with pytest.raises(FeedbackFormatError) as error:
        import_gold(store, batch, table)
    assert [problem.split(": ", 1)[0] for problem in error.value.problems] == [f"{table}:2", f"{table}:3"]
    assert "orders nothing" in error.value.problems[0] and "3 responses; expected 2" in error.value.problems[1]
    kto = tmp_path / "kto.jsonl"
    kto.write_text(json.dumps({"prompt": "p", "completion": "a", "label": True}) + "\n")
    with pytest.raises(FeedbackFormatError, match="no pair"):
        import_gold(store, batch, kto)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(FeedbackFormatError, match="no records"):
        import_gold(store, batch, empty)
    assert counts(store, batch) == before


def test_an_active_batch_gets_the_new_items_into_its_serve_order(store: Store, tmp_path: Path) -> None:
    batch, items = sampled_batch(store, 10)
    answer(store, items[0], "alice", better="1")
    served = [*reversed(items[1:]), items[0]]  # as the ensemble orders it: open ones first, the judged one last
    store.feedback.set_serve_order(batch_id=batch, item_ids=served)

    done = import_gold(store, batch, gold_file(tmp_path, 3), seed=1)
    by_rank = sorted(store.feedback.batch_items(batch_id=batch), key=lambda item: item.serve_rank or 0)
    assert [item.serve_rank for item in by_rank] == list(range(13))
    assert [item.id for item in by_rank if item.id not in done.item_ids] == served  # the order kept
    gold_ranks = [item.serve_rank for item in by_rank if item.id in done.item_ids]
    assert max(gold_ranks) < 12 and gold_ranks != [9, 10, 11]  # among the open ones, not in a row after them
    # the first item served may be gold or not; what is served comes in the new order
    first = store.feedback.next_item(batch_id=batch, annotator="bob")
    assert first is not None and first.id == by_rank[0].id


def test_interleave_places_new_items_among_the_open_ones() -> None:
    order = [10, 11, 12, 13]
    is_open = {10: False, 11: True, 12: False, 13: True}
    assert interleave(order, is_open, [(1, 0.0)]) == [10, 1, 11, 12, 13]  # before the first open item
    assert interleave(order, is_open, [(1, 0.5)]) == [10, 11, 12, 1, 13]
    assert interleave(order, is_open, [(1, 1.0)]) == [10, 11, 12, 13, 1]  # after the last open one
    assert interleave(order, is_open, [(1, 0.1), (2, 0.2)]) == [10, 1, 2, 11, 12, 13]  # one gap: as given
    assert interleave(order, dict.fromkeys(order, False), [(1, 0.3)]) == [10, 11, 12, 13, 1]  # none open: the end
    assert interleave([], {}, [(1, 0.7)]) == [1]
