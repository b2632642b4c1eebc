"""Automatic annotators: a judge that ranks a batch the way a person would.

A judge is any callable `judge(prompt, responses) -> scores`: one number per
response, higher is better. It is named in a spec or on the command line as

- `demo`: the built-in rule-based judge of the demo task (engine/demo_task.py,
  rubric in the README), which also says "both bad" when every response of a
  pair scores 0;
- `module:function`: your own callable, imported from your Python path (a
  reward model, an LLM-as-judge, a regex). It is your code, run as you asked.

A judge's judgements are recorded as annotator `judge:NAME`, so human and AI
feedback stay apart and every later stage can select either (RLAIF).

The judge sees responses in the same randomised order a person would, so a
judge with a position bias shows it in the store like a person's would.
"""

from __future__ import annotations

import importlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from store import Feedback, ItemView, JudgementOutcome
from store.feedback import RankingEntry

from ..errors import UserInputError

Scorer = Callable[[str, Sequence[str]], Sequence[float]]

_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", re.ASCII)


@dataclass(frozen=True)
class Judge:
    name: str  # as written: demo, or module:function
    score: Scorer
    #: scores at or below this mean "bad": a pair where both are is judged both_bad
    bad_at_or_below: float | None = None

    @property
    def annotator(self) -> str:
        return f"judge:{self.name}"


def _demo_scores(prompt: str, responses: Sequence[str]) -> list[float]:
    from ..demo_task import judge_score

    return [judge_score(prompt, response) for response in responses]


def load_judge(name: str) -> Judge:
    """The judge called `name`; UserInputError saying what was expected otherwise."""
    if name == "demo":
        return Judge("demo", _demo_scores, bad_at_or_below=0.0)
    if not _CALLABLE.fullmatch(name):
        raise UserInputError(f"judge {name!r}: expected `demo` or a Python callable written module:function")
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserInputError(f"judge {name!r}: cannot import module {module_name!r} ({exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserInputError(f"judge {name!r}: module {module_name!r} has no callable {function_name!r}")
    return Judge(name, function)


def verdict(judge: Judge, item: ItemView) -> tuple[JudgementOutcome, list[RankingEntry]]:
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
