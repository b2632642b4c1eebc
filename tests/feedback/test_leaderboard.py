"""Arena ratings: Bradley-Terry against cases solvable by hand, bootstrap intervals, online Elo."""

from __future__ import annotations

import math

import pytest

from engine.errors import UserInputError
from engine.feedback import Game, bradley_terry, games_from_judgements, leaderboard, online_elo
from tests.feedback.helpers import pairwise, ranked

GAP_3_TO_1 = 400 * math.log10(3)  # 190.85: the Elo gap of 3:1 odds


def wins(a: str, b: str, won: int, lost: int, tied: int = 0) -> list[Game]:
    return [Game(a, b, 1.0)] * won + [Game(a, b, 0.0)] * lost + [Game(a, b, 0.5)] * tied


def test_three_wins_in_four_is_a_strength_ratio_of_three():
    # The likelihood p^3 (1-p) with p = s_A / (s_A + s_B) peaks at p = 3/4, so s_A / s_B = 3
    # and the gap is 400 * log10(3) = 190.8; anchored on the mean: 1000 +- 95.4.
    ratings = bradley_terry(wins("A", "B", 3, 1), prior_games=0)
    assert ratings["A"] - ratings["B"] == pytest.approx(GAP_3_TO_1, abs=1e-6)
    assert ratings["A"] == pytest.approx(1000 + GAP_3_TO_1 / 2, abs=1e-6)
    anchored = bradley_terry(wins("A", "B", 3, 1), prior_games=0, anchor="B")
    assert anchored == pytest.approx({"A": 1000 + GAP_3_TO_1, "B": 1000.0}, abs=1e-6)


def test_the_default_prior_pulls_only_a_little():
    ratings = bradley_terry(wins("A", "B", 3, 1))
    assert GAP_3_TO_1 - 5 < ratings["A"] - ratings["B"] < GAP_3_TO_1


def test_a_tie_is_half_a_win_for_each():
    # A: 1 win + 2 ties = 2 points of 3 -> p = 2/3, ratio 2, gap 400 log10 2 = 120.4
    ratings = bradley_terry(wins("A", "B", 1, 0, tied=2), prior_games=0)
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(2), abs=1e-6)
    level = bradley_terry(wins("A", "B", 1, 1, tied=3), prior_games=0)
    assert level["A"] == pytest.approx(1000) and level["B"] == pytest.approx(1000)


def test_a_player_that_won_everything_stays_finite_with_the_prior():
    games = wins("A", "B", 4, 0)
    ratings = bradley_terry(games)
    assert math.isfinite(ratings["A"]) and ratings["A"] > ratings["B"] + 400
    with pytest.raises(UserInputError, match="A won or lost every game"):
        bradley_terry(games, prior_games=0)


def test_three_players_are_ordered_and_counted():
    games = wins("A", "B", 3, 1) + wins("B", "C", 3, 1) + wins("A", "C", 4, 1) + wins("C", "B", 0, 0, tied=2)
    rows = leaderboard(games, rounds=50, seed=1)
    assert [(row.rank, row.player) for row in rows] == [(1, "A"), (2, "B"), (3, "C")]
    by_name = {row.player: row for row in rows}
    assert (by_name["A"].games, by_name["A"].wins, by_name["A"].ties, by_name["A"].losses) == (9, 7, 0, 2)
    assert (by_name["C"].games, by_name["C"].wins, by_name["C"].ties, by_name["C"].losses) == (11, 2, 2, 7)
    assert by_name["C"].win_rate == pytest.approx(3 / 11)
    assert sum(row.rating for row in rows) / 3 == pytest.approx(1000)
    assert rows[0].rating - rows[2].rating > GAP_3_TO_1  # A beat C more often than 3:1 and B beat C too


def test_the_interval_holds_the_estimate_and_narrows_with_more_games():
    games = wins("A", "B", 6, 3, tied=1) + wins("B", "C", 5, 4) + wins("A", "C", 7, 3)
    few = {row.player: row for row in leaderboard(games, rounds=200, seed=3)}
    many = {row.player: row for row in leaderboard(games * 8, rounds=200, seed=3)}
    for name in "ABC":
        assert few[name].ci_low <= few[name].rating <= few[name].ci_high
        assert many[name].ci_low <= many[name].rating <= many[name].ci_high
        assert many[name].ci_high - many[name].ci_low < 0.6 * (few[name].ci_high - few[name].ci_low)


def test_the_bootstrap_is_deterministic_per_seed():
    games = wins("A", "B", 6, 3, tied=1) + wins("B", "C", 5, 4)
    assert leaderboard(games, rounds=100, seed=7) == leaderboard(games, rounds=100, seed=7)
    assert leaderboard(games, rounds=100, seed=7) != leaderboard(games, rounds=100, seed=8)


def test_a_named_anchor_sits_at_1000_with_a_point_interval():
    rows = {row.player: row for row in leaderboard(wins("A", "B", 3, 1) + wins("B", "C", 2, 2), anchor="B", rounds=50)}
    assert rows["B"].rating == pytest.approx(1000) and rows["B"].ci_low == rows["B"].ci_high == pytest.approx(1000)
    with pytest.raises(UserInputError, match="anchor 'Z'"):
        leaderboard(wins("A", "B", 1, 1), anchor="Z")


def test_no_rounds_means_no_interval():
    rows = leaderboard(wins("A", "B", 3, 1), rounds=0)
    assert all(row.ci_low is None and row.ci_high is None for row in rows)


def test_online_elo_by_hand():
    # game 1, A beats B from 1000 each: expected 0.5, A +16 -> 1016, B 984.
    # game 2, B beats A: B expected 1 / (1 + 10^(32/400)) = 1 / 2.20226 = 0.45408,
    #   B + 32 * (1 - 0.45408) = 984 + 17.4695 = 1001.4695, A 1016 - 17.4695 = 998.5305
    ratings = online_elo([Game("A", "B", 1.0), Game("B", "A", 1.0)])
    assert ratings["B"] == pytest.approx(1001.4695, abs=1e-3)
    assert ratings["A"] == pytest.approx(998.5305, abs=1e-3)
    rows = leaderboard([Game("A", "B", 1.0), Game("B", "A", 1.0)], rounds=0)
    assert {row.player: round(row.elo, 2) for row in rows} == {"A": 998.53, "B": 1001.47}


def test_games_from_judgements_use_the_responses_models():
    judgements = [
        pairwise("p", "x", "y", "a_better", models=("sft", "ppo")),
        pairwise("p", "x", "y", "both_bad", models=("sft", "ppo")),  # a draw, as in Chatbot Arena
        pairwise("p", "x", "y", "b_better", models=("sft", "sft")),  # same model: no game
        pairwise("p", "x", "y", "a_better", models=("sft", None)),  # unknown model: no game
        pairwise("p", "x", "y", "skipped", models=("sft", "ppo")),
        ranked("q", ["u", "v", "w"], [2, 0, 1], models=["sft", "ppo", "dpo"]),
    ]
    assert games_from_judgements(judgements) == [
        Game("sft", "ppo", 1.0), Game("sft", "ppo", 0.5),
        Game("dpo", "sft", 1.0), Game("dpo", "ppo", 1.0), Game("sft", "ppo", 1.0),
    ]


def test_bad_games_are_refused():
    with pytest.raises(UserInputError, match="against itself"):
        Game("A", "A", 1.0)
    with pytest.raises(UserInputError, match="game score"):
        Game("A", "B", 2)
    with pytest.raises(UserInputError, match="no games"):
        leaderboard([])
