"""Annotator quality: accuracy on gold items, agreement with the others, pace, skips.

Pure functions over plain records (no store). A *gold* item is a rank item
whose answer is known (its best-first tiers, set by a judge or a lead
annotator: engine.feedback.stored.gold); annotators are never told which
items are gold. Per annotator:

- gold accuracy: over the pairs a gold answer orders strictly, the share
  the annotator's verdict orders the same way. A tie or "both bad" on a gold
  pair orders nothing, so it counts as not agreeing; skips are not verdicts
  and do not count. None when they judged no gold item.
- agreement: over the pairs they and someone else labelled, the share of the
  others' labels equal to theirs (engine.feedback.agreement's labels).
- median seconds per verdict, and the shares of "both bad" and of skips among
  everything they did (verdicts and skips).

`below_gold(qualities, threshold)` names the annotators a stage leaves out
with `min_gold_accuracy`: those measured below it. An annotator with no gold
verdicts is kept (there is nothing to hold against them).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.feedback.agreement import judgement_labels
from engine.feedback.records import Judgement

Tiers = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Verdict:
    """One live judgement (or skip) as quality sees it: rankings as tiers of sample ids."""

    annotator: str
    outcome: str
    ranking: Tiers  # best first; empty for tie, both bad and skips
    gold: Tiers | None  # the item's known answer, when it is gold
    seconds: float | None


@dataclass(frozen=True)
class AnnotatorQuality:
    annotator: str
    verdicts: int
    skips: int
    gold_verdicts: int
    gold_accuracy: float | None
    agreement: float | None
    agreement_pairs: int
    median_seconds: float | None
    both_bad_share: float
    skip_share: float

    def to_json(self) -> dict[str, object]:
        return {
            "annotator": self.annotator, "verdicts": self.verdicts, "skips": self.skips,
            "gold_verdicts": self.gold_verdicts, "gold_accuracy": self.gold_accuracy,
            "agreement": self.agreement, "agreement_pairs": self.agreement_pairs,
            "median_seconds": self.median_seconds, "both_bad_share": self.both_bad_share,
            "skip_share": self.skip_share,
        }


def gold_pairs_agreeing(gold: Tiers, ranking: Tiers) -> tuple[int, int]:
    """(pairs ordered as the gold answer orders them, pairs the gold answer orders)."""
    place = {sample_id: index for index, tier in enumerate(ranking) for sample_id in tier}
    agreeing = total = 0
    for i, upper in enumerate(gold):
        for lower in gold[i + 1:]:
            for better in upper:
                for worse in lower:
                    total += 1
                    if better in place and worse in place and place[better] < place[worse]:
                        agreeing += 1
    return agreeing, total


def annotator_agreement(records: Iterable[Judgement]) -> dict[str, tuple[float, int]]:
    """Each annotator's share of agreeing labels with the others, and how many labels it rests on."""
    agree: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for by_annotator in judgement_labels(records).values():
        for name, label in by_annotator.items():
            for other, other_label in by_annotator.items():
                if other != name:
                    seen[name] += 1
                    agree[name] += int(label == other_label)
    return {name: (agree[name] / seen[name], seen[name]) for name in seen}


def annotator_quality(verdicts: Sequence[Verdict],
                      agreement: Mapping[str, tuple[float, int]] | None = None) -> list[AnnotatorQuality]:
    """One row per annotator, by name (see the module doc)."""
    by_annotator: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_annotator[verdict.annotator].append(verdict)
    rows = []
    for name in sorted(by_annotator):
        own = by_annotator[name]
        skips = sum(v.outcome == "skipped" for v in own)
        judged = [v for v in own if v.outcome != "skipped"]
        agreeing = total = gold_verdicts = 0
        for v in judged:
            if v.gold is not None:
                good, pairs = gold_pairs_agreeing(v.gold, v.ranking)
                if pairs:
                    gold_verdicts += 1
                    agreeing += good
                    total += pairs
        seconds = [v.seconds for v in judged if v.seconds is not None]
        share, pairs = (agreement or {}).get(name, (None, 0))
        rows.append(AnnotatorQuality(
            annotator=name, verdicts=len(judged), skips=skips, gold_verdicts=gold_verdicts,
            gold_accuracy=agreeing / total if total else None, agreement=share, agreement_pairs=pairs,
            median_seconds=statistics.median(seconds) if seconds else None,
            both_bad_share=sum(v.outcome == "both_bad" for v in own) / len(own),
            skip_share=skips / len(own),
        ))
    return rows


def below_gold(qualities: Iterable[AnnotatorQuality], threshold: float) -> set[str]:
    """Annotators whose measured gold accuracy is below `threshold` (unmeasured ones are kept)."""
    return {q.annotator for q in qualities if q.gold_accuracy is not None and q.gold_accuracy < threshold}


__all__ = ["AnnotatorQuality", "Verdict", "annotator_agreement", "annotator_quality", "below_gold",
           "gold_pairs_agreeing"]
