"""Rejection sampling's selection: the best of each prompt's K answers, or none.

    choices, left_out = choose_best(candidates, threshold=0.5)

Pure (no torch, no store): the rejection stage gathers the candidates and
their scores, this module decides. The rules, as Llama 2's rejection-sampling
fine-tuning used them:

- the best answer of a prompt is the one with the highest score; answers
  without a score (the scorer left them out) never win;
- a tie is broken by the lowest sample id, the answer generated first, so the
  same scores always choose the same answer;
- a prompt whose best score is below `threshold` contributes nothing: all its
  answers are poor, and fine-tuning on the least poor would teach them.

Each choice says why it was chosen: its score, the runner-up's, how many
answers it was chosen from, and the scorer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One answer to a prompt, with its score (None: not scored)."""

    prompt_id: int
    sample_id: int
    score: float | None


@dataclass(frozen=True)
class Choice:
    """The answer chosen for a prompt, and why."""

    prompt_id: int
    sample_id: int
    score: float
    runner_up: float | None  # the next best score (None: the only scored answer)
    candidates: int  # the prompt's scored answers

    def why(self, scorer: str) -> str:
        """One line a person reads beside the answer."""
        beaten = f", next best {self.runner_up:.3g}" if self.runner_up is not None else ""
        return f"best of {self.candidates} by {scorer}: {self.score:.3g}{beaten}"


@dataclass(frozen=True)
class LeftOut:
    """A prompt that contributes nothing, and why."""

    prompt_id: int
    best: float | None  # None: none of its answers was scored
    candidates: int


def choose_best(candidates: Iterable[Candidate], *, threshold: float | None = None) -> tuple[list[Choice],
                                                                                            list[LeftOut]]:
    """(the chosen answer of each prompt that has one, the prompts left out), both by prompt id."""
    by_prompt: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        by_prompt.setdefault(candidate.prompt_id, []).append(candidate)
    choices: list[Choice] = []
    left_out: list[LeftOut] = []
    for prompt_id in sorted(by_prompt):
        scored = [c for c in by_prompt[prompt_id] if c.score is not None]
        # Highest score first; among equal scores the lowest sample id (generated first).
        ranked = sorted(scored, key=lambda c: (-_score(c), c.sample_id))
        if not ranked:
            left_out.append(LeftOut(prompt_id, None, 0))
            continue
        best = ranked[0]
        if threshold is not None and _score(best) < threshold:
            left_out.append(LeftOut(prompt_id, _score(best), len(ranked)))
            continue
        runner_up = _score(ranked[1]) if len(ranked) > 1 else None
        choices.append(Choice(prompt_id, best.sample_id, _score(best), runner_up, len(ranked)))
    return choices, left_out


def ranking_scores(verdicts: Iterable[tuple[Sequence[Sequence[int]] | None, Sequence[int]]]) -> dict[int, float]:
    """Scores of answers from people's rankings, for `choose_best`: each verdict
    is (tiers of answer ids best first, or None for "all of them bad"; the
    answers shown). An answer scores the share of the other answers shown with
    it that it was ranked above, a tie counting half, and 0 in a "both bad";
    averaged over the verdicts it appears in. So 1 = ranked first by everyone
    who saw it, alone; a threshold of 0.5 keeps answers ranked above at least
    half of what they were shown with, on average."""
    totals: dict[int, list[float]] = {}
    for tiers, shown in verdicts:
        if len(shown) < 2:
            continue
        if tiers is None:
            for answer in shown:
                totals.setdefault(answer, []).append(0.0)
            continue
        below = len(shown)
        for tier in tiers:
            below -= len(tier)
            for answer in tier:
                share = (below + 0.5 * (len(tier) - 1)) / (len(shown) - 1)
                totals.setdefault(answer, []).append(share)
    return {answer: sum(values) / len(values) for answer, values in totals.items()}


def _score(candidate: Candidate) -> float:
    assert candidate.score is not None  # only scored candidates are ranked
    return candidate.score
