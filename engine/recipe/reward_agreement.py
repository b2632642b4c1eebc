"""How a reward model's scores of a batch compare with the people (and judges) who ranked it.

Torch-free: the score stage records scores in the store, and this reads them
back beside the batch's judgements, for the stage's summary and for
`rlhf score`.

Agreement is counted over the pairwise preferences the judgements state: a
ranking of K responses states C(K,2) of them, "A is better" one, a tie or
"both bad" none. The reward model agrees with a preference when it scores
the preferred response strictly higher (equal scores, as identical
responses get, count as not agreeing).

    summary = batch_scores(store, batch_id=3, scorer="/ws/runs/00002/reward/final")
    summary.mean, summary.people.share, summary.by_annotator["alice"].share
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.feedback.records import is_person
from store import Store
from store.feedback import RankingEntry, ranking_tiers


@dataclass(frozen=True)
class Agreement:
    """How many of `pairs` preferences the reward model orders the same way."""

    agreed: int = 0
    pairs: int = 0

    @property
    def share(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.agreed + other.agreed, self.pairs + other.pairs)

    def to_json(self) -> dict[str, Any]:
        return {"agreed": self.agreed, "pairs": self.pairs, "share": self.share}


@dataclass(frozen=True)
class BatchScores:
    batch_id: int
    scorer: str
    responses: int  # in the batch
    scored: int  # of them, by this scorer
    mean: float | None
    people: Agreement
    judges: Agreement
    by_annotator: dict[str, Agreement] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "scorer": self.scorer, "responses": self.responses, "scored": self.scored,
            "mean": self.mean, "agreement": {
                "people": self.people.to_json(), "judges": self.judges.to_json(),
                "by_annotator": {name: a.to_json() for name, a in self.by_annotator.items()},
            },
        }


def batch_scores(store: Store, *, batch_id: int, scorer: str) -> BatchScores:
    """One scorer's scores of a batch: their mean, and their agreement with
    the batch's standing judgements, for people, judges and each annotator."""
    sample_ids = [s.id for s in store.list_samples(batch_id=batch_id)]
    scores = store.scores.values_for(sample_ids, scorer=scorer)
    by_annotator: dict[str, Agreement] = {}
    for judgement in store.feedback.live_judgements(batch_ids=[batch_id]):
        found = agreement(judgement.ranking, scores)
        by_annotator[judgement.annotator] = by_annotator.get(judgement.annotator, Agreement()) + found
    people = sum((a for name, a in by_annotator.items() if is_person(name)), Agreement())
    judges = sum((a for name, a in by_annotator.items() if name.startswith("judge:")), Agreement())
    return BatchScores(
        batch_id=batch_id, scorer=scorer, responses=len(sample_ids), scored=len(scores),
        mean=sum(scores.values()) / len(scores) if scores else None,
        people=people, judges=judges, by_annotator=dict(sorted(by_annotator.items())),
    )


def agreement(ranking: Sequence[RankingEntry], scores: dict[int, float]) -> Agreement:
    """The preferences a stored ranking (sample ids best first, ties as lists)
    states, and how many the scores order the same way. Tied responses state
    no preference; responses without a score are left out."""
    tiers = [[s for s in tier if s in scores] for tier in ranking_tiers(ranking)]
    agreed = pairs = 0
    for position, better_tier in enumerate(tiers):
        for worse_tier in tiers[position + 1:]:
            for better in better_tier:
                for worse in worse_tier:
                    pairs += 1
                    agreed += scores[better] > scores[worse]
    return Agreement(agreed, pairs)


__all__ = ["Agreement", "BatchScores", "agreement", "batch_scores"]
