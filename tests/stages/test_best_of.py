"""Rejection sampling's selection on a constructed batch whose scores are known:
the best answer per prompt, the threshold, ties, unscored answers."""

from __future__ import annotations

from engine.stages.common.best_of import Candidate, Choice, LeftOut, choose_best, ranking_scores

#: prompt -> (sample id, score) of its answers
BATCH = {
    1: [(10, 0.2), (11, 0.9), (12, 0.5)],        # a clear best: 11
    2: [(20, 0.7), (21, 0.7), (22, -1.0)],       # a tie: the lower sample id, 20
    3: [(30, 0.1), (31, 0.3)],                   # all poor: below a threshold of 0.4
    4: [(40, None), (41, 0.6), (42, None)],      # unscored answers never win
    5: [(50, None)],                             # nothing scored
}


def candidates() -> list[Candidate]:
    return [Candidate(prompt, sample, score) for prompt, answers in BATCH.items() for sample, score in answers]


def test_the_best_answer_of_each_prompt_is_chosen_and_ties_go_to_the_first_generated() -> None:
    choices, left_out = choose_best(reversed(candidates()))  # the order they arrive in does not matter
    assert choices == [
        Choice(1, 11, 0.9, 0.5, 3),
        Choice(2, 20, 0.7, 0.7, 3),
        Choice(3, 31, 0.3, 0.1, 2),
        Choice(4, 41, 0.6, None, 1),
    ]
    assert left_out == [LeftOut(5, None, 0)]


def test_a_prompt_whose_best_is_below_the_threshold_contributes_nothing() -> None:
    choices, left_out = choose_best(candidates(), threshold=0.4)
    assert [c.sample_id for c in choices] == [11, 20, 41]
    assert left_out == [LeftOut(3, 0.3, 2), LeftOut(5, None, 0)]
    # At the threshold exactly, a prompt still counts.
    assert [c.sample_id for c in choose_best(candidates(), threshold=0.6)[0]] == [11, 20, 41]
    assert choose_best(candidates(), threshold=0.95) == ([], [LeftOut(p, b, n) for p, b, n in
                                                             [(1, 0.9, 3), (2, 0.7, 3), (3, 0.3, 2), (4, 0.6, 1),
                                                              (5, None, 0)]])


def test_each_choice_says_why() -> None:
    [first, *_], _ = choose_best(candidates())
    assert first.why("reward:rm") == "best of 3 by reward:rm: 0.9, next best 0.5"
    assert Choice(4, 41, 0.6, None, 1).why("judge:demo") == "best of 1 by judge:demo: 0.6"


def test_people_s_rankings_score_the_share_of_answers_ranked_below() -> None:
    scores = ranking_scores([
        ([[1], [2], [3]], [1, 2, 3]),        # 1 above both, 2 above one, 3 above none
        ([[2, 1], [3]], [1, 2, 3]),          # 1 and 2 tied first: each above 3 and half of the other
        (None, [4, 5]),                      # both bad
        ([[6]], [6]),                        # one answer shown: orders nothing
    ])
    assert scores == {1: (1.0 + 0.75) / 2, 2: (0.5 + 0.75) / 2, 3: 0.0, 4: 0.0, 5: 0.0}
    choices, _ = choose_best([Candidate(1, sample, scores.get(sample)) for sample in (1, 2, 3)], threshold=0.5)
    assert [c.sample_id for c in choices] == [1]
