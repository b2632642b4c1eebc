"""A judge ranks a stored batch the way a person would: `auto_rank`.

The judge (engine/feedback/judges.py) only scores; this turns its scores into
the store's outcomes and rankings, item by item, through the same
claim-and-judge calls the rank screen makes, so its judgements land exactly
like a person's, recorded as annotator `judge:NAME`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from engine.errors import UserInputError
from engine.feedback.judges import Judge
from store import Feedback, ItemView, JudgementOutcome
from store.feedback import RankingEntry


def verdict(judge: Judge, item: ItemView) -> tuple[JudgementOutcome, Sequence[RankingEntry]]:
    """The judge's outcome for an item and its ranking (sample ids, best first).

    Responses the judge scores the same share a place (a list of their ids):
    ordering them anyway would state preferences the judge does not have,
    and a reward model trained on those pairs learns noise."""
    texts = [r.text for r in item.responses]
    scores = [float(s) for s in judge.score(item.prompt, texts)]
    if len(scores) != len(texts) or not all(math.isfinite(s) for s in scores):
        raise UserInputError(
            f"judge {judge.name!r} returned {scores!r} for {len(texts)} responses: "
            "expected one finite score per response"
        )
    # Stable: equal scores keep the shown order.
    best_first = [item.responses[i].sample_id for i in sorted(range(len(texts)), key=lambda i: -scores[i])]
    if len(texts) > 2:
        score_of = {r.sample_id: score for r, score in zip(item.responses, scores)}
        by_score: dict[float, list[int]] = {}
        for sample_id in best_first:
            by_score.setdefault(score_of[sample_id], []).append(sample_id)
        return JudgementOutcome.RANKING, [tier[0] if len(tier) == 1 else tier for tier in by_score.values()]
    if judge.bad_at_or_below is not None and max(scores) <= judge.bad_at_or_below:
        return JudgementOutcome.BOTH_BAD, []
    if scores[0] == scores[1]:
        return JudgementOutcome.TIE, []
    return (JudgementOutcome.A_BETTER if scores[0] > scores[1] else JudgementOutcome.B_BETTER), best_first


def auto_rank(
    feedback: Feedback,
    *,
    batch_id: int,
    judge: Judge,
    limit: int | None = None,
    on_item: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Judge every item the batch still needs a verdict on (up to `limit`);
    returns how many were judged. Each verdict is committed as it is made,
    so a stopped run keeps what it did."""
    judged = 0
    after = -1
    while (limit is None or judged < limit) and not should_stop():
        item = feedback.next_item(batch_id=batch_id, annotator=judge.annotator, after_position=after)
        if item is None:
            break
        started = time.perf_counter()
        outcome, ranking = verdict(judge, item)
        feedback.judge(item_id=item.id, annotator=judge.annotator, outcome=outcome, shown=item.shown,
                       ranking=ranking, seconds=time.perf_counter() - started)
        judged += 1
        after = item.position
        if on_item is not None:
            on_item(judged)
    feedback.release(annotator=judge.annotator)
    return judged
