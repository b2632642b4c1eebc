"""The engine's feedback reads, without a run or a model: `Engine.judgements`
(the standing judgements a selection names, as feedback records) and
`Engine.batch_scores` (one scorer's scores of a batch against its judgements).

The batch is written through the store: two prompts, three responses each
(checkpoints good, meh and bad), ranked by a person, by a judge, and by two
whose verdicts do not stand (one undone, one skipped). The "scorer" is a
name under which scores are stored, as the score stage records a reward
model's; here a fake one scores by checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from engine import Engine, UserInputError
from engine.feedback.records import Judgement
from engine.feedback.stored.selection import Selection
from store import Store

CHECKPOINTS = ("good", "meh", "bad")
FAKE_SCORES = {"good": 2.0, "meh": 1.0, "bad": 0.0}  # the fake reward model: good above meh above bad


@dataclass
class Ranked:
    batch: int
    other_batch: int
    ids: dict[str, int]  # "good1" -> sample id: checkpoint and prompt number
    alice_saw: list[list[int]]  # the sample ids of each item in the order alice was shown them


def _batch(store: Store, name: str, prompts: list[str]) -> tuple[int, dict[str, int]]:
    prompt_ids = store.add_prompts([{"text": p} for p in prompts])
    batch = store.create_sample_batch(name=name, settings={}, sources=list(CHECKPOINTS))
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": f"{checkpoint} answer {n}", "checkpoint": checkpoint}
        for n, pid in enumerate(prompt_ids, start=1) for checkpoint in CHECKPOINTS
    ])
    ids = {f"{s.checkpoint}{s.response.rsplit(' ', 1)[1]}": s.id for s in store.list_samples(batch_id=batch.id)}
    store.feedback.items_from_batch(batch_id=batch.id, needed=10)  # room for everyone
    return batch.id, ids


def _rank(store: Store, batch: int, annotator: str, rankings: list[list[object]]) -> list[list[int]]:
    """`annotator` ranks the batch's items in order: one ranking each (sample ids best first, a list
    a tie). Returns what they were shown."""
    shown = []
    for ranking in rankings:
        item = store.feedback.next_item(batch_id=batch, annotator=annotator)
        assert item is not None
        store.feedback.judge(item_id=item.id, annotator=annotator, outcome="ranking", shown=item.shown,
                             ranking=ranking)
        shown.append(item.shown)
    return shown


@pytest.fixture
def ranked(engine: Engine) -> Ranked:
    store = engine.store
    batch, ids = _batch(store, "answers", ["first prompt", "second prompt"])
    g1, m1, b1, g2, m2, b2 = (ids[k] for k in ("good1", "meh1", "bad1", "good2", "meh2", "bad2"))
    alice_saw = _rank(store, batch, "alice", [[g1, [m1, b1]], [b2, m2, g2]])
    _rank(store, batch, "judge:demo", [[g1, m1, b1], [g2, m2, b2]])
    _rank(store, batch, "bob", [[b1, m1, g1]])
    assert store.feedback.undo(batch_id=batch, annotator="bob") is not None  # withdrawn: not a judgement
    item = store.feedback.next_item(batch_id=batch, annotator="carol")
    assert item is not None
    store.feedback.judge(item_id=item.id, annotator="carol", outcome="skipped", shown=item.shown)
    other, other_ids = _batch(store, "elsewhere", ["third prompt"])
    _rank(store, other, "alice", [[other_ids["bad1"], other_ids["meh1"], other_ids["good1"]]])
    return Ranked(batch=batch, other_batch=other, ids=ids, alice_saw=alice_saw)


def _tiers(judgement: Judgement) -> list[list[str]]:
    """A record's ranking as response texts, best tier first (its indices point into its
    responses, which are in the order the annotator was shown them)."""
    assert judgement.ranking is not None
    return [[str(judgement.responses[i].text) for i in tier] for tier in judgement.ranking]


async def test_judgements_are_the_standing_verdicts_as_records_in_shown_order(
        engine: Engine, ranked: Ranked) -> None:
    people = await engine.judgements(Selection(batches=("answers",), annotators="people"))
    assert [(j.annotator, j.prompt) for j in people] == [("alice", "first prompt"), ("alice", "second prompt")]
    first, second = people
    assert _tiers(first) == [["good answer 1"], ["meh answer 1", "bad answer 1"]]  # a tie: one tier
    assert _tiers(second) == [["bad answer 2"], ["meh answer 2"], ["good answer 2"]]
    # The responses in the order she saw them, each with its sample id and the checkpoint that wrote it.
    assert [[r.id for r in j.responses] for j in people] == [[str(i) for i in shown] for shown in ranked.alice_saw]
    assert {(r.id, r.model) for r in second.responses} == {
        (str(ranked.ids[f"{c}2"]), c) for c in CHECKPOINTS}
    assert all(j.outcome == "ranking" for j in people)

    judges = await engine.judgements(Selection(batches=(str(ranked.batch),), annotators="judges"))
    assert [j.annotator for j in judges] == ["judge:demo", "judge:demo"]
    assert [_tiers(j) for j in judges] == [[["good answer 1"], ["meh answer 1"], ["bad answer 1"]],
                                           [["good answer 2"], ["meh answer 2"], ["bad answer 2"]]]

    # Undone (bob) and skipped (carol) verdicts are not judgements; no batch named is every batch.
    everyone = await engine.judgements(Selection())
    assert sorted({j.annotator for j in everyone}) == ["alice", "judge:demo"]
    alices = await engine.judgements(Selection(names=("alice",)))
    assert [j.prompt for j in alices] == ["first prompt", "second prompt", "third prompt"]
    assert await engine.judgements(Selection(batches=("answers",), names=("bob", "carol"))) == []


async def test_judgements_of_an_unknown_batch_are_a_user_input_error(engine: Engine, ranked: Ranked) -> None:
    with pytest.raises(UserInputError, match="nope"):
        await engine.judgements(Selection(batches=("answers", "nope")))


async def test_batch_scores_count_the_scorer_s_agreement_with_people_and_judges(
        engine: Engine, ranked: Ranked) -> None:
    ids = ranked.ids
    scored = {sid: FAKE_SCORES[name[:-1]] for name, sid in ids.items() if name != "meh2"}  # meh2 left unscored
    engine.store.scores.add_scores(scorer="fake-rm", values=scored)
    # Another scorer's scores of the same responses, the other way round: never mixed in.
    engine.store.scores.add_scores(scorer="other-rm", values={sid: -value for sid, value in scored.items()})

    summary = await engine.batch_scores(ranked.batch, scorer="fake-rm")
    assert (summary.batch_id, summary.scorer, summary.responses, summary.scored) == (
        ranked.batch, "fake-rm", 6, 5)
    assert summary.mean == pytest.approx((2 + 1 + 0 + 2 + 0) / 5)
    # alice: good1 > {meh1, bad1} agrees twice (the tie states nothing); bad2 > good2 disagrees
    # (her pairs with the unscored meh2 are left out). judge:demo: 3 of 3, then good2 > bad2.
    assert {name: (a.agreed, a.pairs) for name, a in summary.by_annotator.items()} == {
        "alice": (2, 3), "judge:demo": (4, 4)}
    assert (summary.people.agreed, summary.people.pairs) == (2, 3)
    assert (summary.judges.agreed, summary.judges.pairs, summary.judges.share) == (4, 4, 1.0)

    reversed_ = await engine.batch_scores(ranked.batch, scorer="other-rm")
    assert (reversed_.people.agreed, reversed_.judges.agreed) == (1, 0)

    unscored = await engine.batch_scores(ranked.other_batch, scorer="fake-rm")
    assert (unscored.responses, unscored.scored, unscored.mean) == (3, 0, None)
    assert unscored.by_annotator["alice"].pairs == 0 and unscored.people.share is None
