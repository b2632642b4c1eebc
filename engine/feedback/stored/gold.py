"""Gold items in a stored batch, and each annotator's quality measured on them.

`mark_gold` turns a share of a batch's items into gold items: their known
answer is a judge's ranking (computed here, not recorded as a judgement, so
the item still goes to people like any other) or a lead annotator's live
verdict. The items are drawn at random (seeded) and nothing on the rank
screen tells them apart.

`import_gold` mixes known-answer pairs from a file into a batch: any file
`rlhf prefs import` reads (TRL and HH pairs: chosen over rejected; ranked
lists and judgement rows: their ranking). Each becomes a new item of the
batch, its prompt and responses stored as prompts and samples of it, its
known answer as the item's gold. They are drawn at random (seeded, at most
as many as keep gold at `share` of the batch; a record that is an item of
the batch already, as when a file is mixed in twice, is left out: an
annotator would meet it twice) and placed at random among the
items still open, spread over the batch (`Feedback.mix_in_gold`, one
transaction). Their samples' checkpoint is `gold:FILE`, so exports, stats
and the arena (which counts no game between one model and itself) know
them; annotators never see it. The rank screen names each response's
checkpoint after the vote and its length ("42 tokens"), so a gold sample
carries a look-alike (`store.feedback.SHOWN_AS`): the checkpoints of a
random item of the batch, shuffled, and its length in tokens estimated from
the batch's own characters per token when the batch's responses count
tokens. The file's records are checked as gold before anything is written:
a record with no strict order (a tie, both bad, a skip), with two equal
responses, or with a number of responses the batch's items never have
(which would stand out) is named by its line, and nothing is stored.

`batch_quality` reads the batches' live verdicts and skips and measures
every annotator (engine.feedback.quality).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import FeedbackFormatError, UserInputError
from engine.feedback.importers import ImportFormat, ImportResult, read_feedback
from engine.feedback.judges import load_judge
from engine.feedback.quality import AnnotatorQuality, Tiers, Verdict, annotator_agreement, annotator_quality
from engine.feedback.records import Judgement, PreferencePair, Text, text_to_json
from engine.feedback.stored.auto_rank import verdict
from engine.feedback.stored.selection import to_record
from store import Feedback, RankItemRead, Store
from store.feedback import SHOWN_AS, GoldImport, ImportedResponse, RankingEntry, ranking_tiers

#: the checkpoint (and prompt source) of what a gold file brought in: `gold:FILE`
GOLD_PREFIX = "gold:"


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


@dataclass(frozen=True)
class GoldImported:
    """What `import_gold` did: the file's records, how many became gold items
    of the batch (`item_ids`), and the batch's gold and item counts now."""

    batch_id: int
    path: Path
    format: str
    records: int
    added: int
    gold_items: int
    items: int
    item_ids: tuple[int, ...]
    in_batch: int = 0  # records already an item of the batch (or twice in the file): not added again

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "file": str(self.path), "format": self.format, "records": self.records,
                "added": self.added, "already_in_batch": self.in_batch, "gold_items": self.gold_items,
                "items": self.items}


@dataclass(frozen=True)
class _Known:
    """One record of a gold file: its prompt, responses (text, model) and answer (indices, best first)."""

    where: str
    prompt: Text
    responses: tuple[tuple[Text, str | None], ...]
    answer: tuple[tuple[int, ...], ...]


def import_gold(store: Store, batch_id: int, path: str | Path, *, share: float | None = None, seed: int = 0,
                format: ImportFormat = "auto") -> GoldImported:
    """Mix the known-answer records of `path` into the batch as gold items (see
    the module doc): all of them, or with `share` at most as many as make that
    share of the batch's items gold. All or nothing."""
    if share is not None and not 0 < share <= 1:
        raise UserInputError(f"gold share must be in (0, 1], got {share}")
    source = Path(path).expanduser()
    feedback = store.feedback
    items = feedback.batch_items(batch_id=batch_id)
    if not items:
        raise UserInputError(f"batch {batch_id} has no rank items yet: rank it first (`rlhf rank`), then mix gold in")
    result = read_feedback(source, format=format)
    known = _known_answers(source, result, {len(item.sample_ids) for item in items})
    fresh = _not_in_batch(feedback, batch_id, items, known)
    already = sum(item.gold is not None for item in items)
    wanted = len(fresh) if share is None or share == 1 else min(len(fresh), _room(share, len(items), already))
    rng = random.Random(f"{seed}:{batch_id}:{source.name}")
    picked = rng.sample(fresh, wanted)
    if not picked:  # the batch holds its share of gold already, or every pair of the file
        return GoldImported(batch_id, source, result.format, len(known), 0, already, len(items), (),
                            in_batch=len(known) - len(fresh))
    name = f"{GOLD_PREFIX}{source.name}"
    looks = _LookAlike(store, batch_id, items, rng)
    gold = []
    for stratum, record in enumerate(picked):
        # one item in each of `wanted` equal stretches of the open items: spread over the batch, never in a row
        at = (stratum + rng.random()) / len(picked)
        disguises = looks.disguises([text for text, _ in record.responses])
        gold.append(GoldImport(
            prompt=_plain(record.prompt), prompt_meta=_messages(record.prompt), at=at,
            answer=tuple(tier[0] if len(tier) == 1 else tier for tier in record.answer),
            responses=tuple(
                ImportedResponse(text=_plain(text), model=name, meta={
                    "gold_import": source.name, **({"model": model} if model else {}), **_messages(text),
                    SHOWN_AS: disguise,
                })
                for (text, model), disguise in zip(record.responses, disguises, strict=True)
            ),
        ))
    item_ids = feedback.mix_in_gold(batch_id=batch_id, items=gold, source=name, record={
        "file": str(source.resolve()), "records": len(known), "added": len(gold), "seed": seed, "share": share,
    })
    return GoldImported(batch_id, source, result.format, len(known), len(item_ids), already + len(item_ids),
                        len(items) + len(item_ids), tuple(item_ids), in_batch=len(known) - len(fresh))


def _not_in_batch(feedback: Feedback, batch_id: int, items: Sequence[RankItemRead],
                  known: Sequence[_Known]) -> list[_Known]:
    """The records whose prompt and responses are not an item of the batch yet
    (the same file mixed in twice, or gold made from the batch itself: an
    annotator would meet the same item twice), each once."""
    prompts, responses = feedback.batch_texts(batch_id=batch_id)
    seen = {(prompts[item.prompt_id], frozenset(responses[s] for s in item.sample_ids)) for item in items}
    fresh = []
    for record in known:
        key = (_plain(record.prompt), frozenset(_plain(text) for text, _ in record.responses))
        if key not in seen:
            seen.add(key)
            fresh.append(record)
    return fresh


def _room(share: float, items: int, already: int) -> int:
    """The most new gold items that keep gold at `share` (below 1) of the batch's items, counting them."""
    # (already + k) / (items + k) <= share; the tolerance keeps a float just below a whole number from flooring down
    return max(0, math.floor((share * items - already) / (1 - share) + 1e-9))


def _known_answers(source: Path, result: ImportResult, counts: set[int]) -> list[_Known]:
    """The file's records as known answers, or `FeedbackFormatError` naming, top
    to bottom, every record that cannot be gold in this batch."""
    if result.unpaired:
        raise FeedbackFormatError([f"{source}: KTO rows (prompt/completion/label) have no pair to know the answer "
                                   "of; expected prompt/chosen/rejected, HH dialogues, ranked lists or judgement rows"])
    records: list[_Known] = []
    problems: list[str] = []
    read: Sequence[PreferencePair | Judgement] = result.pairs or result.judgements
    for record, where in zip(read, result.places, strict=True):
        if isinstance(record, PreferencePair):
            known = _Known(where, record.prompt, ((record.chosen, None), (record.rejected, None)), ((0,), (1,)))
        else:
            tiers = record.tiers()
            if tiers is None or len(tiers) < 2:
                problems.append(f"{where}: outcome {record.outcome} orders nothing; expected a known answer "
                                "(a_better, b_better, or a ranking of two or more places)")
                continue
            known = _Known(where, record.prompt, tuple((r.text, r.model) for r in record.responses), tiers)
        texts = [_plain(text) for text, _ in known.responses]
        if len(set(texts)) != len(texts):
            problems.append(f"{where}: two responses are the same text; expected different responses "
                            "(an annotator cannot tell equal ones apart)")
        elif len(texts) not in counts:
            sizes = " or ".join(str(count) for count in sorted(counts))
            problems.append(f"{where}: {len(texts)} responses; expected {sizes}, as the batch's items have "
                            "(a gold item of another size would stand out)")
        else:
            records.append(known)
    if problems:
        raise FeedbackFormatError(problems)
    return records


def _plain(text: Text) -> str:
    """Text as the rank screen shows it: a lone message is its content (a
    sampled response has no `assistant:` in front), longer conversations
    read as `role: content` turns, as `rlhf prefs import` stores them."""
    if isinstance(text, str):
        return text
    if len(text) == 1:
        return text[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in text)


def _messages(text: Text) -> dict[str, Any]:
    return {} if isinstance(text, str) else {"messages": text_to_json(text)}


class _LookAlike:
    """What annotators see of a gold sample instead of its checkpoint and meta
    (`SHOWN_AS`): taken from a random item of the batch, so that the rank
    screen shows gold responses as it shows the batch's own."""

    def __init__(self, store: Store, batch_id: int, items: Sequence[RankItemRead], rng: random.Random) -> None:
        self.rng = rng
        # the batch's own responses: not those of gold mixed in before
        own = {sample.id: sample for sample in store.list_samples(batch_id=batch_id)
               if "gold_import" not in sample.meta}
        self.templates = [[own[sid] for sid in item.sample_ids] for item in items
                          if all(sid in own for sid in item.sample_ids)]
        counted = [(len(s.response), s.meta["tokens"]) for s in own.values()
                   if isinstance(s.meta.get("tokens"), int) and s.meta["tokens"] > 0]
        #: characters per token of the batch's own responses (None: they count no tokens)
        self.per_token = sum(c for c, _ in counted) / sum(t for _, t in counted) if counted else None

    def disguises(self, texts: Sequence[Text]) -> list[dict[str, Any]]:
        template = self.rng.choice(self.templates) if self.templates else []
        order = self.rng.sample(template, len(template))
        result = []
        for index, text in enumerate(texts):
            like = order[index % len(order)] if order else None
            meta: dict[str, Any] = {}
            if like is not None and isinstance(like.meta.get("tokens"), int) and self.per_token:
                meta = {"tokens": max(1, round(len(_plain(text)) / self.per_token)), "finished": True}
            result.append({"checkpoint": like.checkpoint if like is not None else None, "meta": meta})
        return result


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


__all__ = ["GOLD_PREFIX", "GoldImported", "batch_quality", "import_gold", "mark_gold"]
