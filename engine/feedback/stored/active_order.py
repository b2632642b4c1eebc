"""The active order of a stored batch: fit the ensemble on its judgements, store the order.

`ActiveRanker` is what a rank stage with `order = "active"` runs (a worker
process; engine.feedback.active is the logic): it computes every response's
features once (a response that joins the batch later, as a gold item mixed in
from a file does, gets them at the next refresh), then on each `refresh()`

1. reads the batch's live verdicts and turns them into (better, worse) pairs;
2. keeps the judged items of one item in HELDOUT_EVERY (by item id, so the
   split stays put as judgements come in) out of training, to measure the
   held-out pair accuracy honestly; trains the ensemble on the rest
   (warm-started after the first fit);
3. orders the items still needing verdicts by the rule of engine.feedback.active,
   stores that order (`Feedback.set_serve_order`, one transaction: every
   annotator's next item comes from it, claims keep two from holding one), and
4. records the state under the batch's settings key `active`: judgements in,
   held-out accuracy and its history, which the rank screen shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.feedback.active import (
    Ensemble,
    FloatArray,
    OrderItem,
    active_order,
    pairs_from_ranking,
    response_features,
    trend,
)
from engine.feedback.stored.active_state import SETTINGS_KEY, ActiveState
from store import Feedback, RankItemRead
from store.feedback import ranking_tiers

#: one judged item in this many is held out of training to measure accuracy
HELDOUT_EVERY = 5
#: Adam steps of a refresh after the first fit (warm-started heads move little)
REFRESH_STEPS = 100


def is_heldout(item_id: int) -> bool:
    return item_id % HELDOUT_EVERY == 0


class ActiveRanker:
    """The ensemble of one batch, refreshed from the store (see the module doc)."""

    def __init__(self, feedback: Feedback, batch_id: int, *, members: int = 5, seed: int = 0) -> None:
        self.feedback = feedback
        self.batch_id = batch_id
        self.ensemble = Ensemble(members=members, seed=seed)
        self.row: dict[int, int] = {}
        self.features: FloatArray = np.zeros((0, self.ensemble.dim))
        self.refreshes = 0
        self.history: list[tuple[int, float]] = []
        self._add_features(feedback.batch_items(batch_id=batch_id))

    def _add_features(self, items: Sequence[RankItemRead]) -> None:
        """Features of the responses not seen yet. Items can join a batch while
        its ranker runs (`rlhf prefs gold --file` mixes gold items in), so each
        refresh looks for new ones; texts are read only when there are some."""
        new = [(item.prompt_id, s) for item in items for s in item.sample_ids if s not in self.row]
        if not new:
            return
        prompts, responses = self.feedback.batch_texts(batch_id=self.batch_id)
        vectors: list[FloatArray] = []
        for prompt_id, sample_id in new:
            if sample_id not in self.row:
                self.row[sample_id] = len(self.features) + len(vectors)
                vectors.append(response_features(prompts[prompt_id], responses[sample_id]))
        self.features = np.vstack([self.features, np.array(vectors)])

    def refresh(self) -> ActiveState:
        """Fit on the verdicts so far, store the new order and the state (see the module doc)."""
        items = self.feedback.batch_items(batch_id=self.batch_id)
        self._add_features(items)
        live = self.feedback.live_judgements(batch_ids=[self.batch_id])
        train: list[tuple[int, int]] = []
        heldout: list[tuple[int, int]] = []
        for judgement in live:
            tiers = [[self.row[s] for s in tier] for tier in ranking_tiers(judgement.ranking)]
            (heldout if is_heldout(judgement.item_id) else train).extend(pairs_from_ranking(tiers))
        self.ensemble.fit(self.features, train, steps=None if self.refreshes == 0 else REFRESH_STEPS,
                          round_seed=self.refreshes)
        self.refreshes += 1
        accuracy = self.ensemble.accuracy(self.features, heldout)
        if accuracy is not None:
            self.history.append((len(live), accuracy))
        open_items = [OrderItem(id=i.id, position=i.position, rows=tuple(self.row[s] for s in i.sample_ids))
                      for i in items if i.verdicts < i.needed]
        # items already complete go after the open ones, in batch order (they are never served again)
        order = active_order(self.ensemble, self.features, open_items)
        order += [i.id for i in items if i.verdicts >= i.needed]
        self.feedback.set_serve_order(batch_id=self.batch_id, item_ids=order)
        state = ActiveState(judgements=len(live), heldout_accuracy=accuracy, history=tuple(self.history[-20:]),
                            trend=trend(self.history))
        self.feedback.set_batch_setting(batch_id=self.batch_id, key=SETTINGS_KEY, value=state.to_json())
        return state


__all__ = ["HELDOUT_EVERY", "ActiveRanker", "is_heldout"]
