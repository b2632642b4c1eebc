"""Agreement between annotators, checked against small cases computed by hand."""

from __future__ import annotations

import pytest

from engine.errors import UserInputError
from engine.feedback import (
    Judgement,
    Response,
    agreement,
    agreement_from_judgements,
    canonical_outcome,
    cohen_kappa,
    fleiss_kappa,
    judgement_labels,
)
from tests.feedback.helpers import pairwise


def test_cohen_kappa_of_the_textbook_two_by_two_case():
    # Wikipedia "Cohen's kappa", 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    #   p_o = (20 + 15) / 50 = 0.7
    #   A says yes 25/50 = 0.5, B says yes 30/50 = 0.6
    #   p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5
    #   kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_is_none_when_everyone_used_one_category():
    assert cohen_kappa([("a", "a")] * 5) is None
    assert cohen_kappa([]) is None


# Wikipedia "Fleiss' kappa" worked example: 10 items, 14 raters each, 5 categories.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_of_the_wikipedia_example():
    # P_i = (sum_j n_ij^2 - 14) / (14 * 13): 1.000, .253, .308, .440, .330, .462, .242, .176, .286, .286
    # P_bar = 0.378; p_j = .143 .200 .279 .150 .229; P_e = sum p_j^2 = 0.213
    # kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210
    assert fleiss_kappa(WIKIPEDIA_FLEISS) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_wants_the_same_number_of_raters_per_item():
    with pytest.raises(UserInputError, match="same number"):
        fleiss_kappa([[2, 0], [1, 2]])


def test_percent_agreement_is_the_share_of_agreeing_rater_pairs():
    # item 1: x, x, y -> 1 agreeing pair of 3 = 1/3; item 2: x, x, x -> 3/3. Mean 2/3.
    # Fleiss: p_x = 5/6, p_y = 1/6, P_e = 26/36; kappa = (2/3 - 26/36) / (10/36) = -0.2
    labels = {"i1": {"u": "x", "v": "x", "w": "y"}, "i2": {"u": "x", "v": "x", "w": "x"}}
    report = agreement(labels)
    assert report.method == "fleiss" and report.items == 2 and report.annotators == 3 and report.labels == 6
    assert report.percent == pytest.approx(200 / 3)
    assert report.kappa == pytest.approx(-0.2)


def test_two_annotators_get_cohen_and_single_judged_items_are_left_out():
    labels = {
        "i1": {"u": "a", "v": "a"},
        "i2": {"u": "a", "v": "b"},
        "i3": {"u": "b", "v": "b"},
        "i4": {"u": "b", "v": "b"},
        "i5": {"u": "a"},  # one annotator: not an agreement item
    }
    report = agreement(labels)
    # p_o = 3/4; u: a 2/4, b 2/4; v: a 1/4, b 3/4; p_e = 2/16 + 6/16 = 1/2; kappa = (3/4 - 1/2) / (1/2) = 0.5
    assert (report.method, report.items, report.annotators, report.labels) == ("cohen", 4, 2, 8)
    assert report.percent == pytest.approx(75.0)
    assert report.kappa == pytest.approx(0.5)


def test_fleiss_with_varying_rater_counts_uses_the_most_common_count():
    labels = {
        "i1": {"u": "a", "v": "a", "w": "a"},
        "i2": {"u": "b", "v": "b", "w": "a"},
        "i3": {"u": "a", "v": "b"},  # two raters: dropped from Fleiss
    }
    report = agreement(labels)
    assert report.method == "fleiss" and report.items == 2 and report.items_dropped == 1
    assert report.kappa == pytest.approx(fleiss_kappa([[3, 0], [1, 2]]))


def test_kappa_is_none_with_a_single_category_and_nothing_with_no_items():
    report = agreement({"i1": {"u": "a", "v": "a"}, "i2": {"u": "a", "v": "a"}})
    assert report.percent == 100.0 and report.kappa is None
    empty = agreement({"i1": {"u": "a"}})
    assert (empty.items, empty.percent, empty.kappa, empty.method) == (0, None, None, None)


def test_cohen_cannot_be_forced_on_three_annotators():
    with pytest.raises(UserInputError, match="exactly two"):
        agreement({"i": {"u": "a", "v": "a", "w": "a"}}, method="cohen")


def test_canonical_outcome_restates_a_screen_order_in_response_terms():
    assert canonical_outcome("a_better", ("x", "y")) == "a_better"
    assert canonical_outcome("a_better", ("y", "x")) == "b_better"  # y was on the left and won
    assert canonical_outcome("b_better", ("y", "x")) == "a_better"
    assert canonical_outcome("tie", ("y", "x")) == "tie"
    assert canonical_outcome("both_bad", ("y", "x")) == "both_bad"
    assert canonical_outcome("skipped", ("y", "x")) is None
    assert canonical_outcome("a_better", ("x", "y"), canonical=("y", "x")) == "b_better"
    with pytest.raises(UserInputError):
        canonical_outcome("a_better", ("x", "y"), canonical=("x", "z"))


def test_annotators_who_saw_opposite_orders_and_said_the_same_agree():
    judgements = [
        pairwise("p", "x", "y", "a_better", annotator="u"),  # u saw x left, picked x
        pairwise("p", "y", "x", "b_better", annotator="v"),  # v saw y left, picked x
        pairwise("q", "s", "t", "tie", annotator="u"),
        pairwise("q", "t", "s", "tie", annotator="v"),
        pairwise("r", "m", "n", "a_better", annotator="u"),
        pairwise("r", "n", "m", "a_better", annotator="v"),  # picked n: a real disagreement
        pairwise("r", "m", "n", "skipped", annotator="w"),
        pairwise("r", "m", "n", "a_better"),  # no annotator: not counted
    ]
    labels = judgement_labels(judgements)
    assert labels[("p", "x", "y")] == {"u": "a_better", "v": "a_better"}
    assert labels[("r", "m", "n")] == {"u": "a_better", "v": "b_better"}
    report = agreement_from_judgements(judgements)
    assert (report.items, report.annotators) == (3, 2)
    assert report.percent == pytest.approx(200 / 3)


def test_rankings_agree_over_their_induced_pairs_whatever_the_screen_order():
    def ranking(annotator, shown, order):
        return Judgement("p", "prompt", tuple(Response(r, r) for r in shown), "ranking", order, annotator=annotator)

    judgements = [
        ranking("u", ["a", "b", "c"], [0, 1, 2]),  # a > b > c
        ranking("v", ["c", "b", "a"], [1, 2, 0]),  # b > a > c, shown in another order
    ]
    # pairs (a,b): u a_better, v b_better; (a,c): both a_better; (b,c): both a_better.
    # p_o = 2/3; u: a_better 3/3; v: a_better 2/3, b_better 1/3; p_e = 2/3; kappa = 0
    report = agreement_from_judgements(judgements)
    assert (report.method, report.items) == ("cohen", 3)
    assert report.percent == pytest.approx(200 / 3)
    assert report.kappa == pytest.approx(0.0)
