"""Gold items in a stored batch, and each annotator's quality measured on them.

`mark_gold` turns a share of a batch's items into gold items: their known
answer is a judge's ranking (computed here, not recorded as a judgement, so
the item still goes to people like any other) or a lead annotator's live
verdict. The items are drawn at random (seeded) and nothing on the rank
screen tells them apart. `batch_quality` reads the batches' live verdicts
and skips and measures every annotator (engine.feedback.quality).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from engine.errors import UserInputError
from engine.feedback.judges import load_judge
from engine.feedback.quality import AnnotatorQuality, Tiers, Verdict, annotator_agreement, annotator_quality
from engine.feedback.stored.auto_rank import verdict
from engine.feedback.stored.selection import to_record
from store import Store
from store.feedback import RankingEntry, ranking_tiers


def _strict(ranking: Sequence[RankingEntry]) -> Tiers | None:
    """A ranking as tiers, or None when it orders nothing (a tie, both bad, one tier)."""
    tiers = tuple(tuple(tier) for tier in ranking_tiers(ranking))
    return tiers if len(tiers) >= 2 else None


def mark_gold(store: Store, batch_id: int, *, share: float, judge: str | None = None, lead: str | None = None,
              seed: int = 0) -> int:
    """Make gold items of about `share` of the batch (counting those already
    gold), answered by `judge` or by `lead`'s verdicts. Returns how many
    items are gold now."""
    if not 0 < share <= 1:
        raise UserInputError(f"gold share must be in (0, 1], got {share}")
    if (judge is None) == (lead is None):
        raise UserInputError("gold answers come from a judge or from a lead annotator: name one of them")
    feedback = store.feedback
    items = feedback.batch_items(batch_id=batch_id)
    if not items:
        raise UserInputError(f"batch {batch_id} has no rank items yet: rank it first (`rlhf rank`)")
    already = sum(item.gold is not None for item in items)
    wanted = max(0, round(share * len(items)) - already)
    answers: dict[int, list[RankingEntry]] = {}
    if lead is not None:
        for live in feedback.live_judgements(batch_ids=[batch_id], annotators=[lead]):
            answers[live.item_id] = list(live.ranking)
        if not answers:
            raise UserInputError(f"{lead} has judged nothing in batch {batch_id}: no answers to make gold from")
    candidates = [item for item in items if item.gold is None and (lead is None or item.id in answers)]
    random.Random(f"{seed}:{batch_id}").shuffle(candidates)
    loaded = load_judge(judge) if judge is not None else None
    made = 0
    for item in candidates:
        if made >= wanted:
            break
        if loaded is not None:
            _, ranking = verdict(loaded, feedback.get_item(item_id=item.id, annotator=loaded.annotator))
        else:
            ranking = answers[item.id]
        if _strict(ranking) is None:  # an answer that orders nothing cannot grade anyone
            continue
        feedback.set_gold(item_id=item.id, ranking=ranking)
        made += 1
    return already + made


def batch_quality(store: Store, batch_ids: Sequence[int]) -> list[AnnotatorQuality]:
    """Every annotator's quality over these batches' live verdicts and skips."""
    feedback = store.feedback
    gold: dict[int, Tiers] = {}
    for batch_id in batch_ids:
        for item in feedback.batch_items(batch_id=batch_id):
            answer = None if item.gold is None else _strict(item.gold)
            if answer is not None:
                gold[item.id] = answer
    live = feedback.live_judgements(batch_ids=list(batch_ids), include_skipped=True)
    verdicts = [
        Verdict(annotator=j.annotator, outcome=j.outcome, ranking=tuple(tuple(t) for t in ranking_tiers(j.ranking)),
                gold=gold.get(j.item_id), seconds=j.seconds)
        for j in live
    ]
    agreement = annotator_agreement(to_record(j) for j in live if j.outcome != "skipped")
    return annotator_quality(verdicts, agreement)


__all__ = ["batch_quality", "mark_gold"]
