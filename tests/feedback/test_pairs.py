"""Judgements -> preference pairs (both tie policies) and the KTO view."""

from __future__ import annotations

import pytest

from engine.errors import FeedbackFormatError, UserInputError
from engine.feedback import (
    Judgement,
    PreferencePair,
    Response,
    UnpairedExample,
    group_by_prompt,
    induced_pairs,
    preference_pairs,
    unpaired_examples,
)
from tests.feedback.helpers import pairwise, ranked


def test_a_ranking_of_four_gives_its_six_pairs_best_first():
    # responses w x y z ranked y > w > z > x
    judgement = ranked("p1", ["w", "x", "y", "z"], [2, 0, 3, 1])
    pairs = preference_pairs([judgement])
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("y", "w"), ("y", "z"), ("y", "x"), ("w", "z"), ("w", "x"), ("z", "x"),
    ]
    assert {p.group for p in pairs} == {"p1"} and {p.prompt for p in pairs} == {"prompt p1"}
    assert all(p.margin is None for p in pairs)


def test_the_margin_policy_gives_rank_distance_as_margin():
    pairs = preference_pairs([ranked("p1", ["w", "x", "y", "z"], [2, 0, 3, 1])], ties="margin")
    assert {(p.chosen, p.rejected): p.margin for p in pairs} == {
        ("y", "w"): 1.0, ("y", "z"): 2.0, ("y", "x"): 3.0, ("w", "z"): 1.0, ("w", "x"): 2.0, ("z", "x"): 1.0,
    }
    scaled = preference_pairs([ranked("p1", ["w", "x"], [1, 0])], ties="margin", margin_per_rank=0.5)
    assert [(p.chosen, p.rejected, p.margin) for p in scaled] == [("x", "w", 0.5)]


def test_pairs_come_out_grouped_by_prompt_in_first_seen_order():
    judgements = [
        ranked("p1", ["a", "b", "c"], [0, 1, 2]),
        pairwise("p2", "d", "e", "b_better"),
        pairwise("p1", "a", "c", "a_better"),
    ]
    pairs = preference_pairs(judgements)
    assert [p.group for p in pairs] == ["p1"] * 4 + ["p2"]
    groups = group_by_prompt(pairs)
    assert list(groups) == ["p1", "p2"]
    assert [(p.chosen, p.rejected) for p in groups["p2"]] == [("e", "d")]
    assert len(groups["p1"]) == 4  # 3 from the ranking, 1 pairwise (a vote is a vote)


def test_ties_and_both_bad_under_the_drop_policy_give_nothing():
    judgements = [pairwise("p", "a", "b", "tie"), pairwise("p", "a", "b", "both_bad"),
                  pairwise("p", "a", "b", "skipped")]
    assert preference_pairs(judgements, ties="drop") == []


def test_a_tie_under_the_margin_policy_is_both_directions_at_margin_zero():
    pairs = preference_pairs([pairwise("p", "a", "b", "tie"), pairwise("p", "a", "b", "both_bad")], ties="margin")
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [("a", "b", 0.0), ("b", "a", 0.0)]


def test_tied_tiers_in_a_ranking_under_each_policy():
    judgement = ranked("p", ["a", "b", "c", "d"], [0, [1, 2], 3])
    dropped = preference_pairs([judgement], ties="drop")
    assert sorted((p.chosen, p.rejected) for p in dropped) == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d"),
    ]
    margins = {(p.chosen, p.rejected): p.margin for p in preference_pairs([judgement], ties="margin")}
    assert margins == {
        ("a", "b"): 1.0, ("a", "c"): 1.0, ("a", "d"): 2.0,  # tiers apart, not positions
        ("b", "c"): 0.0, ("c", "b"): 0.0,
        ("b", "d"): 1.0, ("c", "d"): 1.0,
    }


def test_induced_pairs_of_a_strict_order_of_k_are_k_choose_2():
    for k in range(2, 7):
        assert len(induced_pairs(tuple((i,) for i in range(k)))) == k * (k - 1) // 2


def test_an_unknown_tie_policy_is_refused():
    with pytest.raises(UserInputError, match="tie policy 'average'"):
        preference_pairs([], ties="average")


def test_the_kto_view():
    judgements = [
        pairwise("p1", "a", "b", "a_better"),
        pairwise("p2", "c", "d", "b_better"),
        pairwise("p3", "e", "f", "both_bad"),
        pairwise("p4", "g", "h", "tie"),
        pairwise("p5", "i", "j", "skipped"),
        ranked("p6", ["k", "l", "m", "n"], [3, 1, 0, 2]),
        ranked("p7", ["o", "q", "r"], [[0, 1], 2]),
    ]
    got = [(u.group, u.completion, u.label) for u in unpaired_examples(judgements)]
    assert got == [
        ("p1", "a", True), ("p1", "b", False),
        ("p2", "d", True), ("p2", "c", False),
        ("p3", "e", False), ("p3", "f", False),
        ("p6", "n", True), ("p6", "m", False),  # the middle of a ranking is left out
        ("p7", "o", True), ("p7", "q", True), ("p7", "r", False),
    ]
    examples = unpaired_examples(judgements)
    assert all(isinstance(u, UnpairedExample) and u.prompt == f"prompt {u.group}" for u in examples)


def test_records_normalise_lists_and_dicts_so_they_compare_equal():
    as_lists = PreferencePair("g", [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "a"}],
                              [{"role": "assistant", "content": "b"}], 1)
    again = PreferencePair("g", [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "a"}],
                           [{"role": "assistant", "content": "b"}], 1.0)
    assert as_lists == again and hash(as_lists) == hash(again)
    judgement = Judgement(7, "p", [{"id": 1, "text": "x"}, Response("2", "y")], "ranking", [1, 0], annotator="ann")
    assert judgement.prompt_key == "7" and judgement.responses[0] == Response("1", "x")
    assert judgement.ranking == ((1,), (0,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outcome": "a_better", "responses": ("x",)}, "with 1 responses; expected 2"),
        ({"outcome": "ranking", "ranking": None}, "without a ranking"),
        ({"outcome": "ranking", "ranking": [0, 1]}, r"leaves out response\(s\) \[2\]"),
        ({"outcome": "ranking", "ranking": [0, 1, 1, 2]}, "more than once"),
        ({"outcome": "ranking", "ranking": [0, 1, 3]}, "names response 3"),
        ({"outcome": "ranking", "ranking": [0, True, 2]}, "expected response indices"),
        ({"outcome": "tie", "responses": ("x", "y"), "ranking": [0, 1]}, "a ranking with outcome tie"),
        ({"outcome": "better"}, "outcome 'better'"),
        ({"outcome": "ranking", "ranking": [0, 1, 2], "responses": ("x", "x", "y")}, "ids repeat"),
    ],
)
def test_a_malformed_judgement_is_refused_in_one_line(kwargs, message):
    texts = kwargs.pop("responses", ("x", "y", "z"))
    with pytest.raises(FeedbackFormatError, match=message):
        Judgement("p", "prompt", tuple(Response(t, t) for t in texts), **kwargs)
