"""From judgements to what trainers read: preference pairs and KTO's unpaired view.

    pairs = preference_pairs(judgements, ties="margin")
    for prompt_key, group in group_by_prompt(pairs).items(): ...

A ranking of K responses becomes its C(K,2) pairs, as in InstructGPT (which
trains on all pairs of a prompt together so the reward model does not overfit
to one prompt's responses seen many times over an epoch): pairs come out
grouped by prompt key, in the order the prompts first appear.

Tie policies (`ties=`):

- `drop`: ties and `both_bad` yield no pair; pairs have no margin. The plain
  Bradley-Terry loss of TRL's RewardTrainer and DPO has no way to use a tie.
- `margin`: every strict preference gets a margin of `margin_per_rank` times
  the number of tiers between the two responses (1 for a pairwise preference,
  up to K-1 in a ranking of K; tied responses share a tier, so `[0, [1, 2], 3]`
  puts 0 and 3 two tiers apart). TRL's reward loss `-log σ(r_c - r_r - margin)`
  then asks for a larger reward gap where the person saw a larger one. A tie
  becomes the pair in both directions with margin 0: the two losses together
  are smallest when the rewards are equal, so they pull the rewards together.
  `both_bad` still yields no pair: it says nothing about which is better.

Rank distance was chosen over rating differences (Llama 2's margins) because a
ranking is all we collect; the scale is the caller's (`margin_per_rank`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations
from typing import Literal, get_args

from engine.errors import UserInputError
from engine.feedback.records import Judgement, PreferencePair, Ranking, UnpairedExample

TiePolicy = Literal["drop", "margin"]
TIE_POLICIES: tuple[str, ...] = get_args(TiePolicy)


def induced_pairs(ranking: Ranking) -> list[tuple[int, int, int]]:
    """Every pair of a ranking as `(better, worse, tiers_apart)`, best first.
    `tiers_apart` is 0 for a tied pair, whose order is then just the listed one.
    A strict order of K gives K(K-1)/2 pairs, all with tiers_apart >= 1."""
    pairs: list[tuple[int, int, int]] = []
    for position, tier in enumerate(ranking):
        pairs.extend((x, y, 0) for x, y in combinations(tier, 2))
        for distance, lower in enumerate(ranking[position + 1:], start=1):
            pairs.extend((x, y, distance) for x in tier for y in lower)
    return pairs


def preference_pairs(
    judgements: Iterable[Judgement],
    *,
    ties: TiePolicy = "drop",
    margin_per_rank: float = 1.0,
) -> list[PreferencePair]:
    """The preference pairs of `judgements` under a tie policy (see the module
    docstring), grouped by prompt key. Duplicate pairs (two annotators, same
    verdict) are kept: each is a vote."""
    if ties not in TIE_POLICIES:
        raise UserInputError(f"tie policy {ties!r}; expected one of {', '.join(TIE_POLICIES)}")
    groups: dict[str, list[PreferencePair]] = {}
    for judgement in judgements:
        groups.setdefault(judgement.prompt_key, []).extend(_pairs_of(judgement, ties, margin_per_rank))
    return [pair for group in groups.values() for pair in group]


def _pairs_of(judgement: Judgement, ties: TiePolicy, margin_per_rank: float) -> list[PreferencePair]:
    """The preference pairs of one judgement (see `preference_pairs`)."""
    tiers = judgement.tiers()
    if tiers is None:
        return []
    texts = [response.text for response in judgement.responses]

    def pair(chosen: int, rejected: int, margin: float | None) -> PreferencePair:
        return PreferencePair(judgement.prompt_key, judgement.prompt, texts[chosen], texts[rejected], margin)

    pairs = []
    for better, worse, distance in induced_pairs(tiers):
        if distance > 0:
            pairs.append(pair(better, worse, distance * margin_per_rank if ties == "margin" else None))
        elif ties == "margin":
            pairs.append(pair(better, worse, 0.0))
            pairs.append(pair(worse, better, 0.0))
    return pairs


def group_by_prompt(pairs: Iterable[PreferencePair]) -> dict[str, list[PreferencePair]]:
    """Pairs by their group (prompt key), in first-seen order."""
    groups: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        groups.setdefault(pair.group, []).append(pair)
    return groups


def unpaired_examples(judgements: Iterable[Judgement]) -> list[UnpairedExample]:
    """KTO's view of `judgements`: completions marked desirable or not.

    - `a_better` / `b_better`: the preferred one desirable, the other not;
    - a ranking: the top tier desirable, the bottom tier undesirable, the
      middle left out (being beaten by a better response does not make a
      middling response bad in absolute terms);
    - `both_bad`: both undesirable (the one verdict that is absolute);
    - `tie` (or a ranking that is one tie), `skipped`: nothing, since a tie
      says how two responses compare, not whether either is good.

    Grouped by prompt key like `preference_pairs`.
    """
    groups: dict[str, list[UnpairedExample]] = {}
    for judgement in judgements:
        groups.setdefault(judgement.prompt_key, []).extend(_examples_of(judgement))
    return [example for group in groups.values() for example in group]


def _examples_of(judgement: Judgement) -> list[UnpairedExample]:
    """KTO's examples from one judgement (see `unpaired_examples`)."""

    def example(index: int, label: bool) -> UnpairedExample:
        return UnpairedExample(judgement.prompt_key, judgement.prompt, judgement.responses[index].text, label)

    if judgement.outcome == "both_bad":
        return [example(index, False) for index in range(len(judgement.responses))]
    tiers = judgement.tiers()
    if tiers is None or len(tiers) < 2:
        return []
    return [example(index, True) for index in tiers[0]] + [example(index, False) for index in tiers[-1]]
