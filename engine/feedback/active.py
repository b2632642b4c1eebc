"""Active order: serve first the items a small reward-model ensemble is least sure of.

Pure logic over numbers (numpy; no torch, no store). The pieces:

- `response_features(prompt, response)`: a fixed, cheap vector per response,
  computed once: signed hashes of the response's words and word pairs, of
  (prompt word, response word) pairs, its length and how much of it repeats
  the prompt. Frozen: the heads learn, the features do not.
- `Ensemble`: M linear Bradley-Terry heads, P(a better than b) =
  sigmoid(w . (x_a - x_b)), each trained with Adam (full batch, a few hundred
  steps, a little L2) on its own bootstrap resample of the judged pairs.
  `fit` warm-starts from the heads' current weights, so a refresh after a few
  more judgements takes a fraction of the first fit.
- `pair_uncertainty` and `active_order`: the rule below.

The rule. For a pair (a, b) let p_m be member m's probability that a is
better, p its mean over the members and s their spread (population standard
deviation). The pair's uncertainty is

    u(a, b) = (0.5 - |p - 0.5|) + s

closeness of the mean to a coin flip, plus the members' disagreement. With
one member s = 0 and u is the closeness of its scores alone. An item of k
responses takes the largest u over its pairs. Items are served by u, largest
first; ties (u equal after rounding to 1e-9, e.g. before any judgement, when
every head is still zero) go by the item's position in the batch, then its
id, lower first. Items every member orders the same way with a wide margin
have u near 0 and go last.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise

import numpy as np
from numpy.typing import NDArray

#: length of a feature vector (hashed buckets; collisions only add a little noise)
FEATURE_DIM = 1024
#: decimals an uncertainty is rounded to before ties are broken by position
TIE_DECIMALS = 9

_WORD = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
FloatArray = NDArray[np.float64]


def _bucket(token: str, dim: int) -> tuple[int, float]:
    """A stable hashed bucket and sign for a token (the same in every process,
    unlike Python's salted hash())."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return (value >> 1) % dim, 1.0 if value & 1 else -1.0


def response_features(prompt: str, response: str, dim: int = FEATURE_DIM) -> FloatArray:
    """The frozen features of one response to one prompt (see the module doc)."""
    words = [w.lower() for w in _WORD.findall(response)]
    prompt_words = {w.lower() for w in _WORD.findall(prompt)}
    vector = np.zeros(dim)
    tokens = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in pairwise(words)]
    tokens += [f"x:{p}|{w}" for w in set(words) for p in prompt_words]
    for token in tokens:
        index, sign = _bucket(token, dim)
        vector[index] += sign
    norm = float(np.linalg.norm(vector))
    if norm:
        vector /= norm
    # a few dense features the hashed ones cannot express: how long, and how much is the prompt again
    repeated = sum(1 for w in words if w in prompt_words) / len(words) if words else 0.0
    for name, value in (("len", math.log1p(len(words)) / 3), ("empty", float(not words)),
                        ("repeat", repeated), ("upper", sum(c.isupper() for c in response) / max(len(response), 1))):
        vector[_bucket(f"dense:{name}", dim)[0]] += value
    return vector


def pairs_from_ranking(tiers: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(better, worse) for every two responses in different tiers of a best-first ranking."""
    return [(a, b) for i, upper in enumerate(tiers) for lower in tiers[i + 1:] for a in upper for b in lower]


@dataclass
class Ensemble:
    """M linear Bradley-Terry heads over fixed features (see the module doc)."""

    dim: int = FEATURE_DIM
    members: int = 5
    steps: int = 300
    learning_rate: float = 0.05
    l2: float = 1e-3
    seed: int = 0
    weights: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"an ensemble needs at least 1 member, got {self.members}")
        self.weights = np.zeros((self.members, self.dim))

    def fit(self, features: FloatArray, pairs: Sequence[tuple[int, int]], *, steps: int | None = None,
            round_seed: int = 0) -> None:
        """Train every member on a bootstrap resample of `pairs` (row indices
        into `features`, better first), from its current weights. With one
        member it trains on the pairs themselves. `round_seed` varies the
        resamples from one refresh to the next."""
        if not pairs:
            return
        better = np.array([a for a, _ in pairs])
        worse = np.array([b for _, b in pairs])
        diffs = features[better] - features[worse]
        rng = np.random.default_rng([self.seed, round_seed])
        for m in range(self.members):
            rows = rng.integers(0, len(pairs), len(pairs)) if self.members > 1 else np.arange(len(pairs))
            self.weights[m] = _adam_bt(diffs[rows], self.weights[m], steps or self.steps, self.learning_rate,
                                       self.l2)

    def probabilities(self, features: FloatArray, a: Sequence[int], b: Sequence[int]) -> FloatArray:
        """P(a[i] better than b[i]) for every member: shape (members, len(a))."""
        diffs = features[np.asarray(a, dtype=int)] - features[np.asarray(b, dtype=int)]
        return _sigmoid(self.weights @ diffs.T)

    def accuracy(self, features: FloatArray, pairs: Sequence[tuple[int, int]]) -> float | None:
        """Share of (better, worse) pairs the members' mean orders right (a tie counts half)."""
        if not pairs:
            return None
        p = self.probabilities(features, [a for a, _ in pairs], [b for _, b in pairs]).mean(axis=0)
        return float(np.mean(np.where(p > 0.5, 1.0, np.where(p == 0.5, 0.5, 0.0))))


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))))


def _adam_bt(diffs: FloatArray, start: FloatArray, steps: int, lr: float, l2: float) -> FloatArray:
    """Minimise mean(-log sigmoid(w . d)) + l2 |w|^2 with Adam, full batch."""
    w = start.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        p = _sigmoid(diffs @ w)
        grad = -(diffs.T @ (1.0 - p)) / len(diffs) + 2 * l2 * w
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        w -= lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    return w


def pair_uncertainty(probabilities: FloatArray) -> FloatArray:
    """u = (0.5 - |mean - 0.5|) + population std, over the members (axis 0)."""
    mean = probabilities.mean(axis=0)
    return np.asarray((0.5 - np.abs(mean - 0.5)) + probabilities.std(axis=0))


@dataclass(frozen=True)
class OrderItem:
    """An item to place: its id, its position in the batch, and its responses
    as row indices into the feature matrix."""

    id: int
    position: int
    rows: tuple[int, ...]


def item_uncertainty(ensemble: Ensemble, features: FloatArray, items: Sequence[OrderItem]) -> list[float]:
    """Each item's uncertainty: the largest u over its pairs of responses."""
    a: list[int] = []
    b: list[int] = []
    owner: list[int] = []
    for index, item in enumerate(items):
        for x, y in combinations(item.rows, 2):
            a.append(x)
            b.append(y)
            owner.append(index)
    scores = [0.0] * len(items)
    if a:
        u = pair_uncertainty(ensemble.probabilities(features, a, b))
        best = np.full(len(items), -np.inf)
        np.maximum.at(best, np.array(owner), u)
        scores = [float(s) if np.isfinite(s) else 0.0 for s in best]
    return scores


def order_by_uncertainty(items: Sequence[OrderItem], scores: Sequence[float]) -> list[int]:
    """Item ids, most uncertain first; ties by position, then id (the stated rule)."""
    ranked = sorted(zip(items, scores, strict=True),
                    key=lambda pair: (-round(pair[1], TIE_DECIMALS), pair[0].position, pair[0].id))
    return [item.id for item, _ in ranked]


def active_order(ensemble: Ensemble, features: FloatArray, items: Sequence[OrderItem]) -> list[int]:
    """The active order of `items` under the ensemble's current heads."""
    return order_by_uncertainty(items, item_uncertainty(ensemble, features, items))


def trend(history: Sequence[tuple[int, float]], window: int = 3) -> str:
    """How held-out accuracy moved over the last refreshes: `rising`, `falling`,
    `flat` (within 0.01), or `` when there are fewer than two points."""
    points = [acc for _, acc in history][-window:]
    if len(points) < 2:
        return ""
    change = points[-1] - points[0]
    return "flat" if abs(change) < 0.01 else ("rising" if change > 0 else "falling")


__all__ = [
    "FEATURE_DIM", "Ensemble", "OrderItem", "active_order", "item_uncertainty", "order_by_uncertainty",
    "pair_uncertainty", "pairs_from_ranking", "response_features", "trend",
]
