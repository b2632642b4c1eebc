"""Agreement between annotators on items each judged by two or more of them.

    report = agreement_from_judgements(judgements)
    print(f"{report.items} items, {report.percent:.0f}% agree, kappa {report.kappa}")

Labels must name responses, not screen positions: the console shows each
annotator the responses in a random order, so "left was better" from two
people can mean opposite things. Here an item is a pair of responses of one
prompt, `(prompt_key, id_1, id_2)` with the ids sorted, and a label is an
outcome in that canonical order (`a_better` means id_1 won).
`canonical_outcome` turns a pairwise outcome as shown into that label; a
ranking of K counts as its K(K-1)/2 induced pairs, each its own item.

Statistics (all over the same items):

- percent agreement: the mean over items of the share of annotator pairs who
  gave the same label (for two annotators: the share of items they agree on);
- Cohen's kappa when exactly two annotators judged the items;
- Fleiss' kappa otherwise. Fleiss needs the same number of raters per item, so
  with varying counts only the items with the most common count are used (ties
  go to the larger count, which gives each item more pairs of raters); the
  others are counted in `items_dropped`.

Kappa is None when it is undefined: every label in one category, so chance
agreement is already 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from engine.errors import UserInputError
from engine.feedback.pairs import induced_pairs
from engine.feedback.records import PAIRWISE_OUTCOMES, Judgement

#: a pairwise outcome in canonical order (the sorted response ids)
PairLabel = Literal["a_better", "b_better", "tie", "both_bad"]
#: (prompt_key, first response id, second response id), ids sorted
ItemKey = tuple[str, str, str]
#: what `agreement` is told an item is (any hashable key: an ItemKey, a prompt id)
ItemT = TypeVar("ItemT", bound=Hashable)

_FLIPPED = {"a_better": "b_better", "b_better": "a_better", "tie": "tie", "both_bad": "both_bad"}


@dataclass(frozen=True)
class Agreement:
    """How much annotators agreed; `percent` is 0..100, None with no items."""

    items: int
    annotators: int
    labels: int
    percent: float | None
    kappa: float | None
    method: Literal["cohen", "fleiss"] | None
    #: items judged by >= 2 annotators but left out of Fleiss' kappa (another rater count)
    items_dropped: int = 0


def canonical_outcome(
    outcome: str,
    shown: tuple[str, str],
    canonical: tuple[str, str] | None = None,
) -> PairLabel | None:
    """A pairwise outcome about responses shown as `shown` (A, B: response ids
    in screen order) restated for the order `canonical` (default: the ids
    sorted). `skipped` gives None: it is no label."""
    if outcome == "skipped":
        return None
    if outcome not in PAIRWISE_OUTCOMES:
        raise UserInputError(f"outcome {outcome!r}; expected one of {', '.join(PAIRWISE_OUTCOMES)} or skipped")
    first, second = canonical if canonical is not None else sorted(shown)
    if shown[0] == shown[1] or {first, second} != set(shown):
        raise UserInputError(f"shown {shown} and canonical {(first, second)}: expected the same two responses")
    return outcome if tuple(shown) == (first, second) else _FLIPPED[outcome]  # type: ignore[return-value]


def judgement_labels(judgements: Iterable[Judgement]) -> dict[ItemKey, dict[str, PairLabel]]:
    """Each item's labels by annotator, from judgements whose responses are in
    the order the annotator saw them. Judgements without an annotator, and
    skipped ones, give no label; if one annotator labelled an item twice (a
    pairwise judgement and a ranking holding the same two responses), the later
    judgement counts."""
    labels: dict[ItemKey, dict[str, PairLabel]] = {}

    def record(prompt_key: str, shown: tuple[str, str], label: PairLabel | None, annotator: str) -> None:
        first, second = sorted(shown)
        labels.setdefault((prompt_key, first, second), {})[annotator] = label  # type: ignore[assignment]

    for judgement in judgements:
        if judgement.annotator is None or judgement.outcome == "skipped":
            continue
        ids = [response.id for response in judgement.responses]
        if judgement.outcome == "ranking":
            assert judgement.ranking is not None
            for better, worse, distance in induced_pairs(judgement.ranking):
                shown = (ids[better], ids[worse])
                label = canonical_outcome("tie" if distance == 0 else "a_better", shown)
                record(judgement.prompt_key, shown, label, judgement.annotator)
        else:
            shown = (ids[0], ids[1])
            record(judgement.prompt_key, shown, canonical_outcome(judgement.outcome, shown), judgement.annotator)
    return labels


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa for two annotators: one `(label_1, label_2)` per item.
    κ = (p_o - p_e) / (1 - p_e), p_e from each annotator's own label shares."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    chance = sum(first[label] * second[label] for label in first) / (n * n)
    if chance >= 1 - 1e-12:
        return None
    return (observed - chance) / (1 - chance)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from a table: one row per item, one column per category,
    each cell how many raters put the item there; every row sums to the same
    number of raters n >= 2."""
    if not counts:
        return None
    raters = {sum(row) for row in counts}
    if len(raters) != 1 or next(iter(raters)) < 2:
        raise UserInputError(
            f"Fleiss' kappa needs the same number (>= 2) of raters per item; rows sum to {sorted(raters)}"
        )
    n, items = raters.pop(), len(counts)
    mean_agreement = sum(_item_agreement(row) for row in counts) / items
    shares = [sum(row[j] for row in counts) / (items * n) for j in range(len(counts[0]))]
    chance = sum(share * share for share in shares)
    if chance >= 1 - 1e-12:
        return None
    return (mean_agreement - chance) / (1 - chance)


def _item_agreement(row: Sequence[int]) -> float:
    """The share of ordered rater pairs of an item that agree (Fleiss' P_i)."""
    n = sum(row)
    return (sum(c * c for c in row) - n) / (n * (n - 1))


def agreement(
    labels: Mapping[ItemT, Mapping[str, Hashable]],
    *,
    method: Literal["auto", "cohen", "fleiss"] = "auto",
) -> Agreement:
    """Agreement over the items of `labels` (item -> annotator -> label) that
    two or more annotators labelled. `auto` picks Cohen's kappa for exactly two
    annotators, Fleiss' otherwise (see the module docstring)."""
    if method not in ("auto", "cohen", "fleiss"):
        raise UserInputError(f"agreement method {method!r}; expected auto, cohen or fleiss")
    rated = {item: by for item, by in labels.items() if len(by) >= 2}
    annotators = {name for by in rated.values() for name in by}
    if not rated:
        return Agreement(items=0, annotators=0, labels=0, percent=None, kappa=None, method=None)
    if method == "auto":
        method = "cohen" if len(annotators) == 2 else "fleiss"
    if method == "cohen":
        if len(annotators) != 2:
            raise UserInputError(f"Cohen's kappa needs exactly two annotators; these items have {len(annotators)}")
        one, two = sorted(annotators)
        pairs = [(by[one], by[two]) for by in rated.values()]
        percent = 100 * sum(a == b for a, b in pairs) / len(pairs)
        return Agreement(len(pairs), 2, 2 * len(pairs), percent, cohen_kappa(pairs), "cohen")

    sizes = Counter(len(by) for by in rated.values())
    common = max(sizes, key=lambda size: (sizes[size], size))
    used = [by for by in rated.values() if len(by) == common]
    categories = list(dict.fromkeys(label for by in used for label in by.values()))
    tallies = [Counter(by.values()) for by in used]
    table = [[tally[category] for category in categories] for tally in tallies]
    percent = 100 * sum(_item_agreement(row) for row in table) / len(table)
    return Agreement(
        items=len(used),
        annotators=len({name for by in used for name in by}),
        labels=common * len(used),
        percent=percent,
        kappa=fleiss_kappa(table),
        method="fleiss",
        items_dropped=len(rated) - len(used),
    )


def agreement_from_judgements(
    judgements: Iterable[Judgement],
    *,
    method: Literal["auto", "cohen", "fleiss"] = "auto",
) -> Agreement:
    """`agreement(judgement_labels(judgements))`: pairwise judgements and the
    induced pairs of rankings, compared by response id."""
    return agreement(judgement_labels(judgements), method=method)
