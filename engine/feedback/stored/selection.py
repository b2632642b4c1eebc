"""Judgements from the store as feedback records, and selecting which ones.

The store keeps what was shown and said (sample ids, the outcome about the
shown A and B); the feedback records keep responses in shown order with the
ranking as indices into them. This is the one place that translates, so the
reward and DPO stages, exports, agreement and the arena read the same thing.

    selection = Selection(batches=("demo/sample",), annotators="people")
    records = selected_judgements(store, selection)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.errors import UserInputError
from engine.feedback.records import AnnotatorKind, Judgement, Ranking, Response, is_person
from store import LiveJudgement, NotFound, Store
from store.feedback import ranking_tiers


@dataclass(frozen=True)
class Selection:
    """Which judgements to use. Empty `batches` = every batch; `names` narrows to
    these annotators; `since`/`until` bound the time they were made."""

    batches: tuple[str, ...] = ()
    annotators: AnnotatorKind = "all"
    names: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    #: leave out annotators whose accuracy on the batches' gold items is below this
    #: (engine.feedback.quality; annotators without gold verdicts are kept)
    min_gold_accuracy: float | None = None


def to_record(live: LiveJudgement) -> Judgement:
    """A store judgement as a record: responses in the order shown (A first)."""
    responses = tuple(
        Response(id=str(sid), text=live.responses[sid].text, model=live.responses[sid].checkpoint)
        for sid in live.shown
    )
    ranking: Ranking | None = None
    if live.outcome == "ranking":
        place = {sid: index for index, sid in enumerate(live.shown)}
        ranking = tuple(tuple(place[sid] for sid in tier) for tier in ranking_tiers(live.ranking))
    return Judgement(
        prompt_key=str(live.prompt_id), prompt=live.prompt, responses=responses, outcome=live.outcome,  # type: ignore[arg-type]
        ranking=ranking, annotator=live.annotator, id=str(live.id),
    )


def selected_live(store: Store, selection: Selection) -> list[LiveJudgement]:
    """The live verdicts a selection names (skips and undone ones left out)."""
    batch_ids = None
    if selection.batches:
        try:
            batch_ids = [store.feedback.find_batch(ref) for ref in selection.batches]
        except NotFound as exc:
            raise UserInputError(str(exc)) from exc
    live = store.feedback.live_judgements(
        batch_ids=batch_ids, annotators=list(selection.names) or None, since=selection.since,
        until=selection.until,
    )
    keep = {
        "all": lambda name: True,
        "people": is_person,
        "judges": lambda name: name.startswith("judge:"),
        "imported": lambda name: name.startswith("import:"),
    }[selection.annotators]
    chosen = [j for j in live if keep(j.annotator)]
    if selection.min_gold_accuracy is not None:
        from engine.feedback.quality import below_gold
        from engine.feedback.stored.gold import batch_quality

        measured_on = batch_ids if batch_ids is not None else sorted({j.batch_id for j in live})
        dropped = below_gold(batch_quality(store, measured_on), selection.min_gold_accuracy)
        chosen = [j for j in chosen if j.annotator not in dropped]
    return chosen


def selected_judgements(store: Store, selection: Selection) -> list[Judgement]:
    return [to_record(j) for j in selected_live(store, selection)]


def annotators_of(judgements: Iterable[Judgement]) -> Sequence[str]:
    return sorted({j.annotator or "" for j in judgements})
