"""`Feedback`: rank items, judgements and claims, i.e. the human-feedback half of the store.

How ranking works, in store terms:

- A sample batch becomes *rank items*: each holds two or more responses to one
  prompt and how many different annotators should judge it (`needed`).
- `next_item` serves an annotator the first item (in batch order) that they
  have not judged or skipped and that still needs a verdict, and *claims* it,
  so two annotators working at once do not both take the last verdict an item
  needs. Reading and claiming happen under SQLite's write lock
  (BEGIN IMMEDIATE), so concurrent consoles serialise here, never race.
- A batch served in active order carries a `serve_rank` on its items (the
  rank stage's ensemble writes it, `set_serve_order`, in one transaction):
  `next_item` then serves from the top of that order, claims as above. A
  gold item carries its known answer in `gold`; `ItemView` never shows it.
- Gold items imported from a file are mixed into a batch by `mix_in_gold`,
  in one transaction: placed among the items still open (not appended
  where annotators would meet them last, in a row), positions renumbered
  0..n-1 (the rank screen steps through a batch one position at a time and
  shows "item N of M"), and into the serve order of an active batch. Their
  samples carry what annotators see of them instead of their own checkpoint
  and meta (`SHOWN_AS`): `ItemView` shows that, so nothing on the rank
  screen, not even the checkpoints named after a vote, sets them apart;
  every other read (exports, stats) sees the real row.
- `judge` appends a judgement and bumps the item's verdict count in one
  transaction: when it returns, the judgement is on disk, before the console
  shows the next item. Undo and edits append a row that supersedes the old
  one; rows are never updated or deleted.
- Which response is shown on the left is shuffled per (item, annotator),
  deterministically, so an annotator who goes back sees the same layout, and
  the order shown is recorded with every judgement.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import combinations
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from .errors import NotFound, StoreError
from .models import (
    ItemClaim,
    Judgement,
    JudgementOutcome,
    JudgementRead,
    Prompt,
    RankItem,
    RankItemRead,
    Sample,
    SampleBatch,
    table_of,
    utcnow,
)

#: a claim older than this no longer holds its item (a console killed mid-item)
CLAIM_TTL = timedelta(minutes=15)
#: a sample meta key: `{"checkpoint": ..., "meta": {...}}`, what an annotator's
#: view (`ItemView`) shows in place of the sample's own checkpoint and meta
SHOWN_AS = "shown_as"

_item = table_of(RankItem)
_judgement = table_of(Judgement)
_claim = table_of(ItemClaim)
_sample = table_of(Sample)
_prompt = table_of(Prompt)
_batch = table_of(SampleBatch)


class FeedbackError(StoreError):
    """A judgement that does not fit its item (wrong responses, bad outcome)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A response as an annotator sees it; `checkpoint` is for after the vote."""

    sample_id: int
    text: str
    checkpoint: str | None
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ItemView:
    """An item ready to show one annotator: responses in *their* shown order."""

    id: int
    batch_id: int
    position: int
    prompt_id: int
    prompt: str
    reference: str | None
    responses: tuple[Response, ...]
    needed: int
    verdicts: int
    mine: JudgementRead | None  # this annotator's live judgement of it, if any

    @property
    def shown(self) -> list[int]:
        return [r.sample_id for r in self.responses]


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a batch is: `mine` for one annotator, `done`/`total` for everyone
    (verdicts counted up to what each item needs)."""

    items: int
    total: int
    done: int
    mine: int
    annotators: int


@dataclass(frozen=True, slots=True)
class LiveJudgement:
    """A live verdict with everything a trainer or an exporter needs."""

    id: int
    item_id: int
    batch_id: int
    annotator: str
    outcome: str
    prompt_id: int
    prompt: str
    shown: list[int]
    ranking: list[RankingEntry]  # best first; a list inside is a tie (ranking_tiers)
    responses: dict[int, Response]  # by sample id
    comment: str | None
    flags: list[str]
    seconds: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RankBatch:
    """A sample batch with rank items, and how far its ranking is."""

    id: int
    name: str
    run_id: int | None
    items: int
    total: int
    done: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImportedResponse:
    text: str
    model: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImportedItem:
    """One imported judgement: the responses as they are listed (A first), the
    outcome about them, and for a ranking the indices best first."""

    prompt: str
    responses: tuple[ImportedResponse, ...]
    outcome: str
    annotator: str
    ranking: tuple[int | tuple[int, ...], ...] = ()  # indices; a tuple inside is a tie
    prompt_meta: dict[str, Any] = field(default_factory=dict)
    source_annotator: str | None = None  # the annotator the file named, kept for the record


@dataclass(frozen=True, slots=True)
class GoldImport:
    """A known-answer item to mix into a batch (`Feedback.mix_in_gold`).

    The responses become new samples of the batch (`model` is their
    checkpoint); `answer` is the known ranking as indices into them, best
    first (a tuple inside is a tie); `at` is where the item goes among the
    batch's open items, 0 before the first, 1 after the last (and the same
    share of an active batch's serve order)."""

    prompt: str
    responses: tuple[ImportedResponse, ...]
    answer: tuple[int | tuple[int, ...], ...]
    at: float
    prompt_meta: dict[str, Any] = field(default_factory=dict)


#: A stored ranking, best first: a sample id per place, or a list of the
#: sample ids tied for that place (a judge that scores two responses the same
#: must not invent an order between them). The JSON of the files we export.
RankingEntry = int | list[int]


def ranking_tiers(ranking: Sequence[RankingEntry]) -> list[list[int]]:
    """A stored ranking as tiers, best first; a tier of several is a tie."""
    return [list(entry) if isinstance(entry, (list, tuple)) else [entry] for entry in ranking]


def ranking_members(ranking: Sequence[RankingEntry]) -> list[int]:
    """Every sample id a stored ranking places, best first (ties in their order)."""
    return [sample_id for tier in ranking_tiers(ranking) for sample_id in tier]


def text_hash(text: str) -> str:
    """How prompts are deduplicated: the sha256 of their text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shown_order(item_id: int, annotator: str, sample_ids: Sequence[int]) -> list[int]:
    """The order an annotator sees an item's responses in: shuffled, but the same
    every time they see it (seeded by item and annotator, stable across processes)."""
    order = list(sample_ids)
    random.Random(f"{item_id}:{annotator}").shuffle(order)
    return order


class Feedback:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction holding SQLite's write lock from its first statement, so
        a read followed by a write (serve and claim, judge and count) is atomic
        across processes."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    # --- items ----------------------------------------------------------------

    def add_items(
        self, *, batch_id: int, groups: Sequence[tuple[int, Sequence[int]]], needed: int = 1
    ) -> list[int]:
        """Append items to a batch: each group is (prompt_id, sample ids). Returns their ids."""
        if needed < 1:
            raise FeedbackError(f"an item needs at least 1 judgement, got {needed}")
        for prompt_id, sample_ids in groups:
            if len(sample_ids) < 2 or len(set(sample_ids)) != len(sample_ids):
                raise FeedbackError(f"an item needs two or more different responses (prompt {prompt_id})")
        with self._write() as connection:
            start = connection.execute(
                select(func.coalesce(func.max(_item.c.position), -1)).where(_item.c.batch_id == batch_id)
            ).scalar_one() + 1
            now = utcnow()
            ids = []
            for offset, (prompt_id, sample_ids) in enumerate(groups):
                result = connection.execute(insert(_item).values(
                    batch_id=batch_id, prompt_id=prompt_id, sample_ids=list(sample_ids),
                    position=start + offset, needed=needed, verdicts=0, created_at=now,
                ))
                ids.append(_inserted_id(result))
        return ids

    def items_from_batch(
        self, *, batch_id: int, needed: int = 1, max_responses: int | None = None, pairwise: bool = False
    ) -> int:
        """Make a sample batch rankable: one item per prompt holding its responses
        (the first `max_responses` of them, if given), or with `pairwise` one item
        per pair of responses from different checkpoints (an arena). Does nothing
        for a batch that already has items. Returns the batch's item count."""
        with self.engine.connect() as connection:
            if connection.execute(select(_batch.c.id).where(
                    _batch.c.id == batch_id)).first() is None:
                raise NotFound(f"no sample batch with id {batch_id}")
            existing = connection.execute(
                select(func.count()).select_from(_item).where(_item.c.batch_id == batch_id)
            ).scalar_one()
            if existing:
                return existing
            rows = connection.execute(
                select(_sample.c.id, _sample.c.prompt_id, _sample.c.checkpoint).where(_sample.c.batch_id == batch_id)
                .order_by(_sample.c.id)
            ).all()
        by_prompt: dict[int, list[tuple[int, str | None]]] = {}
        for sample_id, prompt_id, checkpoint in rows:
            by_prompt.setdefault(prompt_id, []).append((sample_id, checkpoint))
        groups: list[tuple[int, list[int]]] = []
        for prompt_id, answers in by_prompt.items():
            if pairwise:
                groups.extend((prompt_id, [a, b]) for (a, model_a), (b, model_b) in combinations(answers, 2)
                              if model_a != model_b)
            elif len(answers) >= 2:
                ids = [sample_id for sample_id, _ in answers]
                groups.append((prompt_id, ids[:max_responses] if max_responses else ids))
        if not groups:
            raise FeedbackError(f"sample batch {batch_id} has no prompt with two or more responses to rank")
        return len(self.add_items(batch_id=batch_id, groups=groups, needed=needed))

    def get_item(self, *, item_id: int, annotator: str) -> ItemView:
        with self.engine.connect() as connection:
            row = connection.execute(select(_item).where(_item.c.id == item_id)).first()
            if row is None:
                raise NotFound(f"no rank item with id {item_id}")
            return self._view(connection, RankItemRead.model_validate(row._mapping), annotator)

    def item_at(self, *, batch_id: int, position: int, annotator: str) -> ItemView | None:
        """The item at a batch position (for going back and forth), or None past the ends."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(_item).where(_item.c.batch_id == batch_id, _item.c.position == position)
            ).first()
            return None if row is None else self._view(connection, RankItemRead.model_validate(row._mapping),
                                                       annotator)

    def next_item(
        self,
        *,
        batch_id: int,
        annotator: str,
        after_position: int = -1,
        exclude: Iterable[int] = (),
    ) -> ItemView | None:
        """Claim and return the next item this annotator should judge, or None when
        there is none left for them. Items after `after_position` come first, then
        the search wraps around; `exclude` skips items already on their screen."""
        excluded = list(exclude)
        cutoff = utcnow() - CLAIM_TTL
        mine = _judgement.alias()
        later = _judgement.alias()
        already = exists().where(
            mine.c.item_id == _item.c.id, mine.c.annotator == annotator,
            mine.c.outcome != JudgementOutcome.UNDONE.value,
            ~exists().where(later.c.supersedes == mine.c.id),
        )
        others_claims = (
            select(func.count()).select_from(_claim)
            .where(_claim.c.item_id == _item.c.id, _claim.c.annotator != annotator, _claim.c.claimed_at > cutoff)
            .scalar_subquery()
        )
        with self._write() as connection:
            # A batch the ranking job has ordered (`order = "active"`) is served in
            # that stored order from its top, whatever item was on screen before;
            # items it has not placed (yet) come after, by position.
            active = connection.execute(select(exists().where(
                _item.c.batch_id == batch_id, _item.c.serve_rank.is_not(None)))).scalar()
            order = ((_item.c.serve_rank.is_(None), _item.c.serve_rank, _item.c.position) if active
                     else (_item.c.position,))
            for after in ((-1,) if active else (after_position, -1)):
                query = (
                    select(_item)
                    .where(_item.c.batch_id == batch_id, _item.c.position > after,
                           _item.c.verdicts + others_claims < _item.c.needed, ~already)
                    .order_by(*order).limit(1)
                )
                if excluded:
                    query = query.where(_item.c.id.not_in(excluded))
                row = connection.execute(query).first()
                if row is not None:
                    break
            else:
                return None
            item = RankItemRead.model_validate(row._mapping)
            self._claim(connection, item.id, annotator)
            return self._view(connection, item, annotator)

    def batch_items(self, *, batch_id: int) -> list[RankItemRead]:
        """Every item of a batch, by position (gold answers included: not for annotators' screens)."""
        with self.engine.connect() as connection:
            return [RankItemRead.model_validate(r._mapping) for r in connection.execute(
                select(_item).where(_item.c.batch_id == batch_id).order_by(_item.c.position))]

    def batch_texts(self, *, batch_id: int) -> tuple[dict[int, str], dict[int, str]]:
        """The texts a batch's items show: prompts by prompt id, responses by sample id."""
        items = self.batch_items(batch_id=batch_id)
        with self.engine.connect() as connection:
            responses = self._responses(connection, {s for item in items for s in item.sample_ids})
            prompt_ids = list({item.prompt_id for item in items})
            prompts: dict[int, str] = {}
            for start in range(0, len(prompt_ids), 500):
                rows = connection.execute(select(_prompt.c.id, _prompt.c.text)
                                          .where(_prompt.c.id.in_(prompt_ids[start:start + 500])))
                prompts.update((int(pid), str(text)) for pid, text in rows)
        return prompts, {sid: r.text for sid, r in responses.items()}

    def set_serve_order(self, *, batch_id: int, item_ids: Sequence[int]) -> None:
        """Store the order a batch is served in from now on (`order = "active"`):
        the items listed, first served first; items not listed keep their
        place. One transaction, so annotators never see half an order."""
        with self._write() as connection:
            known = set(connection.execute(
                select(_item.c.id).where(_item.c.batch_id == batch_id)).scalars())
            stray = [i for i in item_ids if i not in known]
            if stray:
                raise FeedbackError(f"items {stray} are not in batch {batch_id}")
            for rank, item_id in enumerate(item_ids):
                connection.execute(update(_item).where(_item.c.id == item_id).values(serve_rank=rank))

    def set_gold(self, *, item_id: int, ranking: Sequence[RankingEntry] | None) -> None:
        """Make an item gold with its known answer (best first), or with None plain again."""
        with self._write() as connection:
            item = self._item(connection, item_id)
            value = None if ranking is None else [list(e) if isinstance(e, (list, tuple)) else e for e in ranking]
            if value is not None and sorted(ranking_members(value)) != sorted(item.sample_ids):
                raise FeedbackError(f"item {item_id}: a gold answer must order all of {item.sample_ids}, "
                                    f"got {value}")
            connection.execute(update(_item).where(_item.c.id == item_id).values(gold=value))

    def mix_in_gold(self, *, batch_id: int, items: Sequence[GoldImport], source: str,
                    record: dict[str, Any] | None = None) -> list[int]:
        """Add known-answer items to a batch, all or nothing, in one transaction:
        their prompts (get-or-create by text, `source` for new ones) and
        responses (samples of the batch), the items with their gold answers and
        the `needed` of the batch's items, placed at `at` among the items still
        open (fewer verdicts than they need), every position renumbered 0..n-1
        in the new order. A batch served in active order gets them into its
        serve order the same way. `record` (what was mixed in, from where) is
        appended to the batch settings' `gold_imports`. Returns the new items'
        ids, in the order given."""
        if not items:
            raise FeedbackError(f"batch {batch_id}: no gold items to add")
        for number, item in enumerate(items):
            places = sorted(i for tier in item.answer for i in (tier if isinstance(tier, tuple) else (tier,)))
            if len(item.responses) < 2 or places != list(range(len(item.responses))) or len(item.answer) < 2:
                raise FeedbackError(f"gold item {number}: its answer must order all of its {len(item.responses)} "
                                    f"responses in two or more places, got {item.answer}")
            if not 0 <= item.at <= 1:
                raise FeedbackError(f"gold item {number}: `at` must be in [0, 1], got {item.at}")
        with self._write() as connection:
            settings = connection.execute(select(_batch.c.settings).where(_batch.c.id == batch_id)).first()
            if settings is None:
                raise NotFound(f"no sample batch with id {batch_id}")
            existing = connection.execute(
                select(_item.c.id, _item.c.position, _item.c.verdicts, _item.c.needed, _item.c.serve_rank)
                .where(_item.c.batch_id == batch_id).order_by(_item.c.position, _item.c.id)
            ).all()
            needed = max((row.needed for row in existing), default=1)
            now = utcnow()
            prompt_ids: dict[str, int] = {}
            new_ids: list[int] = []
            for item in items:
                prompt_id = self._prompt_id(connection, item.prompt, item.prompt_meta, prompt_ids, source=source)
                sample_ids = _insert_responses(connection, batch_id, prompt_id, item.responses, now)
                gold = [[sample_ids[i] for i in tier] if isinstance(tier, tuple) else sample_ids[tier]
                        for tier in item.answer]
                # placed below, with every other position of the batch
                new_ids.append(_inserted_id(connection.execute(insert(_item).values(
                    batch_id=batch_id, prompt_id=prompt_id, sample_ids=sample_ids, position=-1,
                    needed=needed, verdicts=0, created_at=now, gold=gold,
                ))))
            placed = list(zip(new_ids, (item.at for item in items), strict=True))
            is_open = {row.id: row.verdicts < row.needed for row in existing}
            by_position = interleave([row.id for row in existing], is_open, placed)
            old_position = {row.id: row.position for row in existing}
            for position, item_id in enumerate(by_position):
                if old_position.get(item_id) != position:
                    connection.execute(update(_item).where(_item.c.id == item_id).values(position=position))
            ranked = sorted((row for row in existing if row.serve_rank is not None),
                            key=lambda row: (row.serve_rank, row.position))
            if ranked:  # served in active order: the new items take ranks among the open ones
                old_rank = {row.id: row.serve_rank for row in ranked}
                for rank, item_id in enumerate(interleave([row.id for row in ranked], is_open, placed)):
                    if old_rank.get(item_id) != rank:
                        connection.execute(update(_item).where(_item.c.id == item_id).values(serve_rank=rank))
            if record is not None:
                current = dict(settings[0] or {})
                connection.execute(update(_batch).where(_batch.c.id == batch_id).values(
                    settings={**current, "gold_imports": [*current.get("gold_imports", []), record]}))
        return new_ids

    def batch_settings(self, *, batch_id: int) -> dict[str, Any]:
        """A sample batch's settings (what made it; the ranking job's state under `active`)."""
        with self.engine.connect() as connection:
            row = connection.execute(select(_batch.c.settings).where(_batch.c.id == batch_id)).first()
        if row is None:
            raise NotFound(f"no sample batch with id {batch_id}")
        return dict(row[0] or {})

    def set_batch_setting(self, *, batch_id: int, key: str, value: Any) -> None:
        """Set one key of a batch's settings (read, changed and written under the write lock)."""
        with self._write() as connection:
            row = connection.execute(select(_batch.c.settings).where(_batch.c.id == batch_id)).first()
            if row is None:
                raise NotFound(f"no sample batch with id {batch_id}")
            connection.execute(update(_batch).where(_batch.c.id == batch_id)
                               .values(settings={**(row[0] or {}), key: value}))

    def release(self, *, annotator: str, item_ids: Iterable[int] | None = None) -> None:
        """Give claimed items back (the console does this when it closes)."""
        query = delete(_claim).where(_claim.c.annotator == annotator)
        if item_ids is not None:
            query = query.where(_claim.c.item_id.in_(list(item_ids)))
        with self._write() as connection:
            connection.execute(query)

    def import_batch(self, *, name: str, settings: dict[str, Any], items: Sequence[ImportedItem]) -> int:
        """Store imported feedback in one transaction: a batch, its prompts and
        responses, one item and one judgement each. All or nothing: a failure
        leaves the store as it was. Returns the batch id."""
        if not items:
            raise FeedbackError(f"{name}: nothing to import")
        with self._write() as connection:
            now = utcnow()
            batch_id = _inserted_id(connection.execute(insert(_batch).values(
                name=name, settings=settings, sources=sorted({r.model for i in items for r in i.responses if r.model}),
                run_id=None, stage_id=None, created_at=now,
            )))
            prompt_ids: dict[str, int] = {}
            for position, item in enumerate(items):
                prompt_id = self._prompt_id(connection, item.prompt, item.prompt_meta, prompt_ids, source=name)
                sample_ids = _insert_responses(connection, batch_id, prompt_id, item.responses, now)
                outcome = JudgementOutcome(item.outcome)
                verdict = int(outcome.is_verdict)
                item_id = _inserted_id(connection.execute(insert(_item).values(
                    batch_id=batch_id, prompt_id=prompt_id, sample_ids=sample_ids, position=position,
                    needed=1, verdicts=verdict, created_at=now,
                )))
                connection.execute(insert(_judgement).values(
                    item_id=item_id, batch_id=batch_id, annotator=item.annotator,
                    source_annotator=item.source_annotator, outcome=outcome.value,
                    shown=sample_ids, ranking=[
                        [sample_ids[i] for i in entry] if isinstance(entry, tuple) else sample_ids[entry]
                        for entry in item.ranking
                    ], comment=None, flags=[],
                    seconds=None, supersedes=None, created_at=now,
                ))
        return int(batch_id)

    def _prompt_id(self, connection: Connection, text: str, meta: dict[str, Any], known: dict[str, int],
                   *, source: str) -> int:
        digest = text_hash(text)
        if digest not in known:
            found = connection.execute(select(_prompt.c.id).where(_prompt.c.text_hash == digest)).scalar()
            if found is None:
                found = _inserted_id(connection.execute(insert(_prompt).values(
                    text=text, text_hash=digest, source=source, reference=None, meta=meta, created_at=utcnow(),
                )))
            known[digest] = int(found)
        return known[digest]

    # --- judgements -----------------------------------------------------------

    def judge(
        self,
        *,
        item_id: int,
        annotator: str,
        outcome: JudgementOutcome | str,
        shown: Sequence[int],
        ranking: Sequence[RankingEntry] = (),
        comment: str | None = None,
        flags: Sequence[str] = (),
        seconds: float | None = None,
    ) -> JudgementRead:
        """Record a verdict (or a skip). It supersedes this annotator's live
        judgement of the item, if any. Durable when this returns.

        For a pair, `ranking` is derived from the outcome when not given; for
        `ranking` outcomes it must order all of the item's responses, best first
        (a list of sample ids inside it is a tie)."""
        outcome = JudgementOutcome(outcome)
        if outcome is JudgementOutcome.UNDONE:
            raise FeedbackError("use undo() to withdraw a judgement")
        with self._write() as connection:
            item = self._item(connection, item_id)
            if sorted(shown) != sorted(item.sample_ids):
                raise FeedbackError(f"item {item_id}: shown responses {list(shown)} are not the item's "
                                    f"{item.sample_ids}")
            ranking = [list(e) if isinstance(e, (list, tuple)) else e for e in ranking] \
                or _ranking_from(outcome, list(shown))
            if outcome is JudgementOutcome.RANKING and sorted(ranking_members(ranking)) != sorted(item.sample_ids):
                raise FeedbackError(f"item {item_id}: a ranking must order all of {item.sample_ids}, "
                                    f"got {ranking}")
            if outcome in (JudgementOutcome.A_BETTER, JudgementOutcome.B_BETTER) and len(shown) != 2:
                raise FeedbackError(f"item {item_id} has {len(shown)} responses: rank them instead of A/B")
            previous = self._live(connection, item_id, annotator)
            row = self._append(connection, item, annotator, outcome, list(shown), ranking, comment,
                               list(flags), seconds, previous)
            connection.execute(delete(_claim).where(_claim.c.item_id == item_id, _claim.c.annotator == annotator))
            return row

    def undo(self, *, batch_id: int, annotator: str) -> JudgementRead | None:
        """Withdraw this annotator's newest live judgement in the batch (a
        superseding `undone` row); returns the withdrawn judgement, whose item the
        console shows again, or None when there is nothing to undo."""
        with self._write() as connection:
            later = _judgement.alias()
            row = connection.execute(
                select(_judgement)
                .where(_judgement.c.batch_id == batch_id, _judgement.c.annotator == annotator,
                       _judgement.c.outcome != JudgementOutcome.UNDONE.value,
                       ~exists().where(later.c.supersedes == _judgement.c.id))
                .order_by(_judgement.c.id.desc()).limit(1)
            ).first()
            if row is None:
                return None
            withdrawn = JudgementRead.model_validate(row._mapping)
            item = self._item(connection, withdrawn.item_id)
            self._append(connection, item, annotator, JudgementOutcome.UNDONE, withdrawn.shown, [], None, [],
                         None, withdrawn)
            self._claim(connection, item.id, annotator)
            return withdrawn

    def comment(self, *, item_id: int, annotator: str, comment: str | None,
                flags: Sequence[str] | None = None) -> JudgementRead:
        """Set the comment (and flags) of this annotator's live judgement of an
        item: a superseding copy with the new comment."""
        with self._write() as connection:
            previous = self._live(connection, item_id, annotator)
            if previous is None:
                raise FeedbackError(f"item {item_id}: {annotator} has no judgement to comment on")
            item = self._item(connection, item_id)
            return self._append(
                connection, item, annotator, JudgementOutcome(previous.outcome), previous.shown,
                previous.ranking, comment, list(previous.flags if flags is None else flags),
                previous.seconds, previous,
            )

    def judgements(self, *, batch_id: int | None = None, annotator: str | None = None) -> list[JudgementRead]:
        """Every row, superseded ones included, oldest first: the raw table."""
        query = select(_judgement).order_by(_judgement.c.id)
        if batch_id is not None:
            query = query.where(_judgement.c.batch_id == batch_id)
        if annotator is not None:
            query = query.where(_judgement.c.annotator == annotator)
        with self.engine.connect() as connection:
            return [JudgementRead.model_validate(r._mapping) for r in connection.execute(query)]

    def live_judgements(
        self,
        *,
        batch_ids: Sequence[int] | None = None,
        annotators: Sequence[str] | None = None,
        annotator_prefixes: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_skipped: bool = False,
    ) -> list[LiveJudgement]:
        """The verdicts that stand (not superseded, not undone), with prompt and
        response texts, selected by batch, annotator (exact names, or prefixes
        such as `judge:`) and date."""
        later = _judgement.alias()
        query = (
            select(_judgement, _prompt.c.text.label("prompt_text"), _item.c.prompt_id)
            .join(_item, _item.c.id == _judgement.c.item_id)
            .join(_prompt, _prompt.c.id == _item.c.prompt_id)
            .where(_judgement.c.outcome != JudgementOutcome.UNDONE.value,
                   ~exists().where(later.c.supersedes == _judgement.c.id))
            .order_by(_judgement.c.id)
        )
        if not include_skipped:
            query = query.where(_judgement.c.outcome != JudgementOutcome.SKIPPED.value)
        if batch_ids is not None:
            query = query.where(_judgement.c.batch_id.in_(list(batch_ids)))
        conditions: list[ColumnElement[bool]] = []
        if annotators is not None:
            conditions.append(_judgement.c.annotator.in_(list(annotators)))
        for prefix in annotator_prefixes or ():
            conditions.append(_judgement.c.annotator.startswith(prefix, autoescape=True))
        if conditions:
            query = query.where(or_(*conditions))
        if since is not None:
            query = query.where(_judgement.c.created_at >= since)
        if until is not None:
            query = query.where(_judgement.c.created_at < until)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
            sample_ids = {sid for row in rows for sid in row._mapping["shown"]}
            responses = self._responses(connection, sample_ids)
        result = []
        for row in rows:
            m = row._mapping
            result.append(LiveJudgement(
                id=m["id"], item_id=m["item_id"], batch_id=m["batch_id"], annotator=m["annotator"],
                outcome=m["outcome"], prompt_id=m["prompt_id"], prompt=m["prompt_text"], shown=list(m["shown"]),
                ranking=list(m["ranking"]), responses={sid: responses[sid] for sid in m["shown"]},
                comment=m["comment"], flags=list(m["flags"]), seconds=m["seconds"], created_at=m["created_at"],
            ))
        return result

    # --- progress -------------------------------------------------------------

    def progress(self, *, batch_id: int, annotator: str | None = None) -> Progress:
        later = _judgement.alias()
        with self.engine.connect() as connection:
            items, total, done = connection.execute(
                select(func.count(), func.coalesce(func.sum(_item.c.needed), 0),
                       func.coalesce(func.sum(func.min(_item.c.verdicts, _item.c.needed)), 0))
                .where(_item.c.batch_id == batch_id)
            ).one()
            live = and_(_judgement.c.batch_id == batch_id,
                        _judgement.c.outcome != JudgementOutcome.UNDONE.value,
                        _judgement.c.outcome != JudgementOutcome.SKIPPED.value,
                        ~exists().where(later.c.supersedes == _judgement.c.id))
            mine = 0
            if annotator is not None:
                mine = connection.execute(
                    select(func.count()).select_from(_judgement).where(live, _judgement.c.annotator == annotator)
                ).scalar_one()
            annotators = connection.execute(
                select(func.count(func.distinct(_judgement.c.annotator))).where(live)
            ).scalar_one()
        return Progress(items=items, total=int(total), done=int(done), mine=mine, annotators=annotators)

    def rank_batches(self) -> list[RankBatch]:
        """Every sample batch, newest first, with its ranking progress (0 items:
        not made rankable yet)."""
        query = (
            select(_batch.c.id, _batch.c.name, _batch.c.run_id, _batch.c.created_at, func.count(_item.c.id),
                   func.sum(_item.c.needed), func.sum(func.min(_item.c.verdicts, _item.c.needed)))
            .outerjoin(_item, _item.c.batch_id == _batch.c.id)
            .group_by(_batch.c.id).order_by(_batch.c.id.desc())
        )
        with self.engine.connect() as connection:
            return [
                RankBatch(id=bid, name=name, run_id=run_id, items=items, total=int(total or 0),
                          done=int(done or 0), created_at=created)
                for bid, name, run_id, created, items, total, done in connection.execute(query)
            ]

    def find_batch(self, ref: str | int | None) -> int:
        """A sample batch by id or name (the newest of that name); with no ref, the
        newest batch that still has items to judge, else the newest batch."""
        with self.engine.connect() as connection:
            if ref is None:
                open_batch = connection.execute(
                    select(_item.c.batch_id).where(_item.c.verdicts < _item.c.needed)
                    .order_by(_item.c.batch_id.desc()).limit(1)
                ).scalar()
                newest = connection.execute(select(func.max(_batch.c.id))).scalar()
                found = open_batch or newest
                if found is None:
                    raise NotFound("no sample batches yet: a `sample` stage makes one, `rlhf prefs import` another")
                return int(found)
            text = str(ref)
            query = select(_batch.c.id).where(
                _batch.c.id == int(text) if text.isdigit() else _batch.c.name == text
            ).order_by(_batch.c.id.desc()).limit(1)
            found = connection.execute(query).scalar()
            if found is None:
                names = [f"{i} ({n})" for i, n in connection.execute(
                    select(_batch.c.id, _batch.c.name).order_by(_batch.c.id.desc()).limit(5))]
                raise NotFound(f"no sample batch {text!r} (newest: {', '.join(names) or 'none yet'})")
            return int(found)

    # --- helpers --------------------------------------------------------------

    def _item(self, connection: Connection, item_id: int) -> RankItemRead:
        row = connection.execute(select(_item).where(_item.c.id == item_id)).first()
        if row is None:
            raise NotFound(f"no rank item with id {item_id}")
        return RankItemRead.model_validate(row._mapping)

    def _live(self, connection: Connection, item_id: int, annotator: str) -> JudgementRead | None:
        later = _judgement.alias()
        row = connection.execute(
            select(_judgement)
            .where(_judgement.c.item_id == item_id, _judgement.c.annotator == annotator,
                   ~exists().where(later.c.supersedes == _judgement.c.id))
            .order_by(_judgement.c.id.desc()).limit(1)
        ).first()
        if row is None or row._mapping["outcome"] == JudgementOutcome.UNDONE.value:
            return None
        return JudgementRead.model_validate(row._mapping)

    def _append(
        self,
        connection: Connection,
        item: RankItemRead,
        annotator: str,
        outcome: JudgementOutcome,
        shown: list[int],
        ranking: list[RankingEntry],
        comment: str | None,
        flags: list[str],
        seconds: float | None,
        previous: JudgementRead | None,
    ) -> JudgementRead:
        """Insert a judgement row and keep the item's verdict count in step."""
        values: dict[str, Any] = dict(
            item_id=item.id, batch_id=item.batch_id, annotator=annotator, outcome=outcome.value, shown=shown,
            ranking=ranking, comment=comment, flags=flags, seconds=seconds,
            supersedes=previous.id if previous else None, created_at=utcnow(),
        )
        new_id = _inserted_id(connection.execute(insert(_judgement).values(**values)))
        delta = int(outcome.is_verdict) - int(previous is not None and JudgementOutcome(previous.outcome).is_verdict)
        if delta:
            connection.execute(update(_item).where(_item.c.id == item.id).values(verdicts=_item.c.verdicts + delta))
        return JudgementRead(id=new_id, **values)

    def _claim(self, connection: Connection, item_id: int, annotator: str) -> None:
        connection.execute(delete(_claim).where(_claim.c.item_id == item_id, _claim.c.annotator == annotator))
        connection.execute(insert(_claim).values(item_id=item_id, annotator=annotator, claimed_at=utcnow()))

    def _responses(self, connection: Connection, sample_ids: Iterable[int]) -> dict[int, Response]:
        ids = list(sample_ids)
        responses: dict[int, Response] = {}
        # SQLite limits bound parameters per statement; chunk big exports.
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for sid, text, checkpoint, meta in connection.execute(
                select(_sample.c.id, _sample.c.response, _sample.c.checkpoint, _sample.c.meta)
                .where(_sample.c.id.in_(chunk))
            ):
                responses[sid] = Response(sample_id=sid, text=text, checkpoint=checkpoint, meta=dict(meta or {}))
        return responses

    def _view(self, connection: Connection, item: RankItemRead, annotator: str) -> ItemView:
        prompt = connection.execute(
            select(_prompt.c.text, _prompt.c.reference).where(_prompt.c.id == item.prompt_id)
        ).one()
        mine = self._live(connection, item.id, annotator)
        # A judged item is shown as it was judged; otherwise in this annotator's shuffled order.
        order = mine.shown if mine is not None else shown_order(item.id, annotator, item.sample_ids)
        responses = {sid: _as_shown(response) for sid, response in self._responses(connection, order).items()}
        return ItemView(
            id=item.id, batch_id=item.batch_id, position=item.position, prompt_id=item.prompt_id,
            prompt=prompt.text, reference=prompt.reference, responses=tuple(responses[s] for s in order),
            needed=item.needed, verdicts=item.verdicts, mine=mine,
        )


def _inserted_id(result: CursorResult[Any]) -> int:
    """The primary key the one row an INSERT wrote was given."""
    key = result.inserted_primary_key
    if key is None:  # only for statements that are not a single-row INSERT
        raise StoreError("an INSERT returned no primary key")
    return int(key[0])


def _insert_responses(connection: Connection, batch_id: int, prompt_id: int,
                      responses: Sequence[ImportedResponse], now: datetime) -> list[int]:
    """Responses from outside any run (a file's) as samples of the batch; their ids, in order."""
    return [
        _inserted_id(connection.execute(insert(_sample).values(
            prompt_id=prompt_id, batch_id=batch_id, run_id=None, stage_id=None, step=None,
            checkpoint=response.model, response=response.text, meta=response.meta, created_at=now,
        )))
        for response in responses
    ]


def _as_shown(response: Response) -> Response:
    """A response as annotators see it: a sample that carries `SHOWN_AS` shows
    that checkpoint and meta instead of its own."""
    shown_as = response.meta.get(SHOWN_AS)
    if not isinstance(shown_as, dict):
        return response
    return Response(sample_id=response.sample_id, text=response.text, checkpoint=shown_as.get("checkpoint"),
                    meta=dict(shown_as.get("meta") or {}))


def interleave(order: Sequence[int], is_open: dict[int, bool], new: Sequence[tuple[int, float]]) -> list[int]:
    """`order` (item ids) with each new (item id, at) placed among its open
    items: of n open ones, `at` in [k / (n + 1), (k + 1) / (n + 1)) goes just
    before open item k (0 first), from n / (n + 1) to 1 right after the last.
    New items in the same gap keep their given order; with no open item they
    go at the end."""
    open_indices = [index for index, item_id in enumerate(order) if is_open.get(item_id, False)]
    gaps = len(open_indices)
    before: dict[int, list[int]] = {}  # index into order -> new ids that go just before it
    for item_id, at in new:
        gap = min(int(at * (gaps + 1)), gaps)
        anchor = open_indices[gap] if gap < gaps else (open_indices[-1] + 1 if gaps else len(order))
        before.setdefault(anchor, []).append(item_id)
    result: list[int] = []
    for index, item_id in enumerate(order):
        result.extend(before.get(index, ()))
        result.append(item_id)
    result.extend(before.get(len(order), ()))
    return result


def _ranking_from(outcome: JudgementOutcome, shown: list[int]) -> list[RankingEntry]:
    """Best first, for the outcomes that say which is better; empty otherwise."""
    if outcome is JudgementOutcome.A_BETTER:
        return list(shown)
    if outcome is JudgementOutcome.B_BETTER:
        return list(reversed(shown))
    return []

