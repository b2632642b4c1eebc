"""Active order: the disagreement rule on fixed heads (computed by hand), ties, and heads that learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.feedback.active import (
    Ensemble,
    OrderItem,
    active_order,
    order_by_uncertainty,
    pair_uncertainty,
    pairs_from_ranking,
    response_features,
    trend,
)


def fixed(weights: list[list[float]]) -> Ensemble:
    """An ensemble whose heads are set by hand (dim = len of a row)."""
    ensemble = Ensemble(dim=len(weights[0]), members=len(weights))
    ensemble.weights = np.array(weights, dtype=float)
    return ensemble


def test_the_order_is_the_one_the_rule_gives_by_hand() -> None:
    # One feature; rows: r0 = 0, r1 = ln 9, r2 = ln 4, r3 = 0.
    features = np.array([[0.0], [math.log(9)], [math.log(4)], [0.0]])
    ensemble = fixed([[1.0], [-1.0]])  # two members that disagree about everything
    items = [
        OrderItem(id=10, position=0, rows=(0, 3)),  # p = 0.5, 0.5: u = 0.5 + 0 = 0.5
        OrderItem(id=11, position=1, rows=(2, 0)),  # p = 0.8, 0.2: mean 0.5, std 0.3 -> u = 0.8
        OrderItem(id=12, position=2, rows=(1, 0)),  # p = 0.9, 0.1: mean 0.5, std 0.4 -> u = 0.9
    ]
    assert active_order(ensemble, features, items) == [12, 11, 10]

    # Members that agree with a wide margin go last: p = 0.9, 0.9 -> u = 0.1 + 0.
    agreeing = fixed([[1.0], [1.0]])
    assert active_order(agreeing, features, items) == [10, 11, 12]  # u = 0.5, 0.2, 0.1


def test_one_member_orders_by_the_closeness_of_its_scores() -> None:
    probabilities = np.array([[0.9, 0.55, 0.3]])
    assert pair_uncertainty(probabilities) == pytest.approx([0.1, 0.45, 0.3])


def test_ties_go_by_position_then_id() -> None:
    items = [OrderItem(id=7, position=2, rows=(0, 1)), OrderItem(id=5, position=2, rows=(0, 1)),
             OrderItem(id=9, position=0, rows=(0, 1)), OrderItem(id=3, position=1, rows=(0, 1))]
    # equal scores (to rounding) keep batch order; a larger one jumps ahead
    assert order_by_uncertainty(items, [0.5, 0.5, 0.5 + 1e-12, 0.7]) == [3, 9, 5, 7]


def test_an_item_of_three_takes_its_least_sure_pair() -> None:
    features = np.array([[0.0], [math.log(9)], [math.log(9) + 0.0]])
    ensemble = fixed([[1.0]])
    # pairs: (r0, r1) p = 0.1 -> u 0.1; (r0, r2) the same; (r1, r2) p = 0.5 -> u 0.5
    items = [OrderItem(id=1, position=0, rows=(0, 1)), OrderItem(id=2, position=1, rows=(0, 1, 2))]
    assert active_order(ensemble, features, items) == [2, 1]


def test_heads_learn_the_judged_preference_and_generalise() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 8))
    truth = rng.normal(size=8)
    utility = features @ truth
    pairs = [(a, b) if utility[a] > utility[b] else (b, a) for a, b in zip(range(0, 40, 2), range(1, 40, 2))]
    heldout = [(a, b) if utility[a] > utility[b] else (b, a) for a, b in zip(range(40, 60, 2), range(41, 60, 2))]
    ensemble = Ensemble(dim=8, members=3, steps=200)
    assert ensemble.accuracy(features, heldout) == 0.5  # untrained: every pair a coin flip
    ensemble.fit(features, pairs)
    accuracy = ensemble.accuracy(features, heldout)
    assert accuracy is not None and accuracy >= 0.8
    # bootstrap resamples make the members differ
    assert not np.allclose(ensemble.weights[0], ensemble.weights[1])


def test_features_are_stable_and_see_the_prompt() -> None:
    a = response_features("What is 3 + 5?", "8")
    assert np.array_equal(a, response_features("What is 3 + 5?", "8"))
    assert not np.array_equal(a, response_features("What is 2 + 5?", "8"))
    assert np.linalg.norm(response_features("x", "")) > 0  # an empty answer is still a point


def test_pairs_from_a_ranking_and_the_trend() -> None:
    assert pairs_from_ranking([[1], [2, 3], [4]]) == [(1, 2), (1, 3), (1, 4), (2, 4), (3, 4)]
    assert trend([(10, 0.6)]) == ""
    assert trend([(10, 0.6), (20, 0.65), (30, 0.7)]) == "rising"
    assert trend([(10, 0.7), (20, 0.705)]) == "flat"
    assert trend([(10, 0.7), (20, 0.6)]) == "falling"
