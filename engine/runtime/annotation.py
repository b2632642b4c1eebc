"""`Annotation`: people judging rank items, through the engine.

Every change a front end makes to human feedback goes through here: making a
sample batch rankable, importing a preference file, marking gold items or
mixing a file's known-answer pairs into a batch as gold, serving (and
claiming) the next item, recording a verdict, undoing it, commenting on it,
giving claims back. The store does the
work in its transactions (`store.feedback.Feedback`: serve-and-claim under
SQLite's write lock, a judgement durable when `judge` returns); this module is
the one door to it, so the console never writes to the store itself.

The methods are blocking SQLite calls, like the store's: the rank screen runs
them in order on a worker thread of its own ("judge, then serve the next"
must not be reordered), which an `async` API would only get in the way of.

    annotation = engine.annotation
    session = annotation.session(batch_id=3, annotator="alice")
    item = session.next_item()
    session.judge(item, JudgementOutcome.A_BETTER)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.feedback import Agreement
    from engine.feedback.importers import ImportFormat, ImportResult
    from engine.feedback.quality import AnnotatorQuality
    from engine.feedback.stored.active_state import ActiveState
    from engine.feedback.stored.gold import GoldImported
    from store import Feedback, ItemView, JudgementOutcome, JudgementRead, Progress, Store


class Annotation:
    """The engine's door to human feedback in one workspace's store."""

    def __init__(self, store: Store | Callable[[], Store]) -> None:
        # A callable defers opening the ORM-backed store until something is judged.
        self._store_of: Callable[[], Store] = store if callable(store) else (lambda: store)

    @property
    def _store(self) -> Store:
        return self._store_of()

    def make_rankable(self, *, batch_id: int, needed: int = 1) -> int:
        """One rank item per prompt of a sample batch (`Feedback.items_from_batch`);
        nothing for a batch that has items already. Returns its item count."""
        return self._store.feedback.items_from_batch(batch_id=batch_id, needed=needed)

    def import_file(self, path: str | Path, *, format: ImportFormat = "auto",
                    name: str | None = None) -> tuple[int, ImportResult]:
        """Store a preference file as a judged batch (engine.feedback.stored.importing);
        returns (batch id, what the file held)."""
        from engine.feedback.stored.importing import import_file

        return import_file(self._store, path, format=format, name=name)

    def session(self, *, batch_id: int, annotator: str) -> AnnotationSession:
        """One annotator judging one batch."""
        return AnnotationSession(self._store_of, batch_id=batch_id, annotator=annotator)

    def people_agreement(self, batch_id: int) -> Agreement:
        """Agreement between the people (not `judge:`/`import:`) who judged the
        batch, on the items two or more of them judged (engine.feedback)."""
        from engine.feedback import agreement_from_judgements
        from engine.feedback.records import is_person
        from engine.feedback.stored.selection import to_record

        live = self._store.feedback.live_judgements(batch_ids=[batch_id])
        return agreement_from_judgements([to_record(j) for j in live if is_person(j.annotator)])


    def mark_gold(self, *, batch_id: int, share: float, judge: str | None = None, lead: str | None = None,
                  seed: int = 0) -> int:
        """Make about `share` of a batch's items gold, answered by a judge or a lead
        annotator (engine.feedback.stored.gold); returns how many are gold now."""
        from engine.feedback.stored.gold import mark_gold

        return mark_gold(self._store, batch_id, share=share, judge=judge, lead=lead, seed=seed)

    def import_gold(self, *, batch_id: int, path: str | Path, share: float | None = None, seed: int = 0,
                    format: ImportFormat = "auto") -> GoldImported:
        """Mix a file's known-answer pairs into a batch as gold items, at random
        places among its open items, all or nothing (engine.feedback.stored.gold);
        with `share`, at most as many as make that share of its items gold."""
        from engine.feedback.stored.gold import import_gold

        return import_gold(self._store, batch_id, path, share=share, seed=seed, format=format)

    def quality(self, batch_ids: Sequence[int]) -> list[AnnotatorQuality]:
        """Per annotator over these batches: gold accuracy, agreement, pace, both-bad and skip shares."""
        from engine.feedback.stored.gold import batch_quality

        return batch_quality(self._store, batch_ids)


class AnnotationSession:
    """What one annotator does to one batch: serve, judge, undo, comment, release."""

    def __init__(self, store_of: Callable[[], Store], *, batch_id: int, annotator: str) -> None:
        self._store_of = store_of
        self.batch_id = batch_id
        self.annotator = annotator

    @property
    def _feedback(self) -> Feedback:
        return self._store_of().feedback

    # --- items -------------------------------------------------------------------

    def next_item(self, *, after_position: int = -1, exclude: Iterable[int] = ()) -> ItemView | None:
        """Claim and return the next item this annotator should judge (None: nothing left for them)."""
        return self._feedback.next_item(batch_id=self.batch_id, annotator=self.annotator,
                                        after_position=after_position, exclude=exclude)

    def item_at(self, position: int) -> ItemView | None:
        """The item at a position of the batch, as this annotator sees it (None past the ends)."""
        return self._feedback.item_at(batch_id=self.batch_id, position=position, annotator=self.annotator)

    def get_item(self, item_id: int) -> ItemView:
        return self._feedback.get_item(item_id=item_id, annotator=self.annotator)

    def release(self) -> None:
        """Give back every item this annotator holds (claims also expire by themselves)."""
        self._feedback.release(annotator=self.annotator)

    # --- verdicts ----------------------------------------------------------------

    def judge(
        self,
        item: ItemView,
        outcome: JudgementOutcome,
        *,
        ranking: Sequence[int] = (),
        comment: str | None = None,
        flags: Sequence[str] = (),
        seconds: float | None = None,
    ) -> JudgementRead:
        """Record a verdict (or a skip) on an item as shown to this annotator;
        durable when this returns. It replaces their earlier judgement of it."""
        return self._feedback.judge(
            item_id=item.id, annotator=self.annotator, outcome=outcome, shown=item.shown,
            ranking=list(ranking), comment=comment, flags=list(flags), seconds=seconds,
        )

    def undo(self) -> JudgementRead | None:
        """Withdraw this annotator's newest live judgement in the batch; the withdrawn one, or None."""
        return self._feedback.undo(batch_id=self.batch_id, annotator=self.annotator)

    def comment(self, item_id: int, comment: str | None) -> JudgementRead:
        """Set (or with None remove) the comment of this annotator's judgement of an item."""
        return self._feedback.comment(item_id=item_id, annotator=self.annotator, comment=comment)

    # --- reads of the batch --------------------------------------------------------

    def progress(self) -> Progress:
        """How far the batch is, and how far this annotator is in it."""
        return self._feedback.progress(batch_id=self.batch_id, annotator=self.annotator)

    def active_state(self) -> ActiveState | None:
        """What the active order's job last measured on this batch (None: not served in active order)."""
        from engine.feedback.stored.active_state import read_state

        return read_state(self._feedback, self.batch_id)

    def batch_name(self) -> str | None:
        """The sample batch's name (None: no such batch)."""
        return next((b.name for b in self._feedback.rank_batches() if b.id == self.batch_id), None)


__all__ = ["Annotation", "AnnotationSession"]
