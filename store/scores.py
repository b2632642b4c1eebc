"""`RewardScores`: what reward models said about stored responses.

A score row is (sample, scorer, value): `scorer` names the reward model (its
folder, or hub id), so one batch can carry the scores of several reward
models and each score says whose it is. Rows are appended; when the same
model scores a response twice, the newest score is the one that stands.

    store.scores.add_scores(scorer="runs/00003/reward/final", values={17: 1.25, 18: -0.5})
    store.scores.scores_for([17, 18])          # the standing score of every scorer
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Engine, insert, select

from .models import RewardScore, RewardScoreRead, table_of, utcnow

_score = table_of(RewardScore)

#: SQLite limits the parameters of one statement: ids are looked up in chunks
_CHUNK = 500


class RewardScores:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_scores(self, *, scorer: str, values: Mapping[int, float]) -> None:
        """One score per sample id, all written in one transaction."""
        if not values:
            return
        now = utcnow()
        rows = [{"sample_id": int(sample_id), "scorer": scorer, "value": float(value), "created_at": now}
                for sample_id, value in values.items()]
        with self.engine.begin() as connection:
            connection.execute(insert(_score), rows)

    def scores_for(self, sample_ids: Iterable[int], *, scorer: str | None = None) -> list[RewardScoreRead]:
        """The standing score of each (sample, scorer) among these samples (one
        scorer's only, when given), in sample id order, then scorer."""
        ids = sorted(set(sample_ids))
        standing: dict[tuple[int, str], RewardScoreRead] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                query = select(_score).where(_score.c.sample_id.in_(ids[start:start + _CHUNK]))
                if scorer is not None:
                    query = query.where(_score.c.scorer == scorer)
                # Oldest first, so a newer score of the same pair replaces an older one.
                for row in connection.execute(query.order_by(_score.c.id)):
                    score = RewardScoreRead.model_validate(row._mapping)
                    standing[(score.sample_id, score.scorer)] = score
        return [standing[key] for key in sorted(standing)]

    def values_for(self, sample_ids: Iterable[int], *, scorer: str) -> dict[int, float]:
        """One scorer's standing scores, by sample id (unscored samples left out)."""
        return {s.sample_id: s.value for s in self.scores_for(sample_ids, scorer=scorer)}
