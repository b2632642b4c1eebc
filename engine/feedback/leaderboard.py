"""Arena ratings for checkpoints from pairwise comparisons of their responses.

    rows = leaderboard(games_from_judgements(judgements), anchor="sft", seed=0)
    for row in rows: print(row.rank, row.player, round(row.rating), row.ci_low, row.ci_high)

The rating is the Bradley-Terry maximum-likelihood strength: P(i beats j) =
p_i / (p_i + p_j), shown on the Elo
scale `400 * log10(p)` (a 400-point gap is 10:1 odds) with the players' mean,
or a named baseline, at 1000. It does not depend on the order of the games,
unlike classic online Elo, which is reported beside it (`elo`, K=32, games in
the order given) for reference only.

Choices:

- A tie counts as half a win for each player (as in chess and Chatbot Arena);
  so does `both_bad` in `games_from_judgements`, as Chatbot Arena counts its
  "both are bad" votes as ties.
- Fit: Newton's method on the log-likelihood (see `_fit` for why not MM).
- Prior: every player also plays `prior_games` virtual games against a fixed
  player of rating 1000, winning half. Without it a player that won every game
  has an infinite rating; with the default 0.1 games it stays finite and the
  pull on everyone else is small (A beating B 3 of 4 gives 3:1 odds, 190.8
  points, without the prior and about 188 with it). It also pins the scale,
  so the fit needs no connected comparison graph.
- 95% intervals: a seeded bootstrap over games (resample them with
  replacement, refit, take the 2.5th and 97.5th percentiles); the same seed
  gives the same intervals. A player absent from a resample is left out of
  that round's values. With a named anchor the anchor's interval is a point.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.errors import UserInputError
from engine.feedback.pairs import induced_pairs
from engine.feedback.records import Judgement

#: natural log of strength -> Elo points
SCALE = 400 / math.log(10)
BASE_RATING = 1000.0


@dataclass(frozen=True)
class Game:
    """One comparison between players `a` and `b`; `score` is a's points:
    1 a won, 0.5 tie, 0 b won."""

    a: str
    b: str
    score: float

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise UserInputError(f"a game of {self.a!r} against itself; expected two different players")
        if self.score not in (0, 0.5, 1):
            raise UserInputError(f"game score {self.score!r}; expected 1 (a won), 0.5 (tie) or 0 (b won)")


@dataclass(frozen=True)
class Rating:
    """One row of the leaderboard; ratings on the Elo scale."""

    rank: int
    player: str
    rating: float
    #: the bootstrap interval; None when no bootstrap rounds were asked for
    ci_low: float | None
    ci_high: float | None
    games: int
    wins: int
    ties: int
    losses: int
    #: (wins + ties / 2) / games
    win_rate: float
    #: classic online Elo (K=32, from 1000, games in the order given), for reference
    elo: float


def games_from_judgements(judgements: Iterable[Judgement]) -> list[Game]:
    """Games between the `model`s of judged responses: a pairwise preference
    is a win, a tie or `both_bad` a draw, a ranking its induced pairs (K(K-1)/2
    games, not independent, which makes the intervals somewhat too narrow).
    Responses without a model, and pairs from the same model, give no game."""
    games = []
    for judgement in judgements:
        models = [response.model for response in judgement.responses]
        tiers = ((0, 1),) if judgement.outcome == "both_bad" else judgement.tiers()
        if tiers is None:
            continue
        for better, worse, distance in induced_pairs(tiers):
            a, b = models[better], models[worse]
            if a is not None and b is not None and a != b:
                games.append(Game(a, b, 0.5 if distance == 0 else 1.0))
    return games


def online_elo(games: Iterable[Game], *, k: float = 32.0, initial: float = BASE_RATING) -> dict[str, float]:
    """Classic Elo, updated game by game in the order given."""
    ratings: dict[str, float] = {}
    for game in games:
        ra, rb = ratings.get(game.a, initial), ratings.get(game.b, initial)
        expected = 1 / (1 + 10 ** ((rb - ra) / 400))
        ratings[game.a] = ra + k * (game.score - expected)
        ratings[game.b] = rb - k * (game.score - expected)
    return ratings


# A fit works on totals, not games: for each pair of players (i < j by index)
# the games played and i's points. The bootstrap only changes these totals.
_Totals = dict[tuple[int, int], tuple[int, float]]


def _totals(cells: Sequence[tuple[int, int, float]], counts: Sequence[int]) -> _Totals:
    totals: dict[tuple[int, int], list[float]] = {}
    for (i, j, score), count in zip(cells, counts):
        if count:
            entry = totals.setdefault((i, j), [0, 0.0])
            entry[0] += count
            entry[1] += count * score
    return {key: (int(n), points) for key, (n, points) in totals.items()}


def _fit(
    players: int,
    totals: _Totals,
    prior_games: float,
    start: Sequence[float] | None = None,
    *,
    held: int = 0,
    tolerance: float = 1e-9,
    max_iterations: int = 200,
) -> list[float]:
    """Bradley-Terry log-strengths by Newton's method with a backtracking line
    search on the log-likelihood (concave in log-strengths, strictly so with
    the prior, so each step is a solve with a positive-definite matrix).

    The virtual opponent of log-strength 0 enters as `prior_games` games per
    player, half won. Without it only differences are identified, so player
    `held` stays where it starts. Hunter's MM algorithm was tried first: it converges very
    slowly along the overall scale, which only the tiny prior pins down.
    """
    free = [i for i in range(players) if prior_games > 0 or i != held]
    theta = list(start) if start is not None else [0.0] * players
    current = _log_likelihood(theta, totals, prior_games)
    for _ in range(max_iterations):
        gradient, information = _derivatives(theta, totals, prior_games)
        step_free = _solve_positive_definite(
            [[information[i][j] for j in free] for i in free], [gradient[i] for i in free]
        )
        step = [0.0] * players
        for i, value in zip(free, step_free):
            step[i] = value
        scale = 1.0
        while True:  # halve the step until the likelihood does not fall
            trial = [t + scale * d for t, d in zip(theta, step)]
            value = _log_likelihood(trial, totals, prior_games)
            if value >= current - 1e-12 or scale < 1e-12:
                break
            scale /= 2
        theta, current = trial, value
        if max(abs(scale * d) for d in step) < tolerance:
            return theta
    raise UserInputError(
        f"the Bradley-Terry fit did not converge in {max_iterations} steps; "
        "expected comparisons linking every player both ways, or prior_games > 0"
    )


def _log_likelihood(theta: Sequence[float], totals: _Totals, prior_games: float) -> float:
    def log_sum_exp(a: float, b: float) -> float:
        high = max(a, b)
        return high + math.log1p(math.exp(-abs(a - b)))

    value = 0.0
    for (i, j), (n, points) in totals.items():
        value += points * theta[i] + (n - points) * theta[j] - n * log_sum_exp(theta[i], theta[j])
    if prior_games:
        value += sum(prior_games * (t / 2 - log_sum_exp(t, 0.0)) for t in theta)
    return value


def _derivatives(
    theta: Sequence[float], totals: _Totals, prior_games: float
) -> tuple[list[float], list[list[float]]]:
    """The gradient of the log-likelihood and the information matrix (minus its Hessian)."""
    players = len(theta)
    gradient = [0.0] * players
    information = [[0.0] * players for _ in range(players)]
    for (i, j), (n, points) in totals.items():
        p = _sigmoid(theta[i] - theta[j])
        gradient[i] += points - n * p
        gradient[j] -= points - n * p
        weight = n * p * (1 - p)
        information[i][i] += weight
        information[j][j] += weight
        information[i][j] -= weight
        information[j][i] -= weight
    if prior_games:
        for i, t in enumerate(theta):
            p = _sigmoid(t)
            gradient[i] += prior_games * (0.5 - p)
            information[i][i] += prior_games * p * (1 - p)
    return gradient, information


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    e = math.exp(x)
    return e / (1 + e)


def _solve_positive_definite(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Solve A x = b for a symmetric positive-definite A by Cholesky (stdlib
    only: the leaderboard is small, and numpy is not this package's to need).
    A tiny ridge keeps a player with no games (a bootstrap round) solvable."""
    n = len(vector)
    lower = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            total = matrix[i][j] - sum(lower[i][k] * lower[j][k] for k in range(j))
            if i == j:
                lower[i][i] = math.sqrt(max(total, 0.0) + 1e-12)
            else:
                lower[i][j] = total / lower[j][j]
    forward = [0.0] * n
    for i in range(n):
        forward[i] = (vector[i] - sum(lower[i][k] * forward[k] for k in range(i))) / lower[i][i]
    solution = [0.0] * n
    for i in reversed(range(n)):
        solution[i] = (forward[i] - sum(lower[k][i] * solution[k] for k in range(i + 1, n))) / lower[i][i]
    return solution


def _anchored(logs: Sequence[float], present: Sequence[int], anchor: int | None) -> list[float]:
    """Elo-scale ratings with the anchor, or the mean of the players present, at 1000."""
    zero = logs[anchor] if anchor is not None else sum(logs[i] for i in present) / len(present)
    return [BASE_RATING + SCALE * (x - zero) for x in logs]


def _percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation, like numpy's default."""
    values = sorted(values)
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def bradley_terry(
    games: Iterable[Game],
    *,
    anchor: str | None = None,
    prior_games: float = 0.1,
) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo scale, by player (see the module docstring)."""
    players, cells, counts = _prepare(games, prior_games, anchor)
    logs = _fit(len(players), _totals(cells, counts), prior_games)
    ratings = _anchored(logs, range(len(players)), players.index(anchor) if anchor is not None else None)
    return dict(zip(players, ratings))


def _prepare(
    games: Iterable[Game], prior_games: float, anchor: str | None
) -> tuple[list[str], list[tuple[int, int, float]], list[int]]:
    """Players in first-seen order and the distinct (i, j, i's score) outcomes with their counts."""
    if prior_games < 0:
        raise UserInputError(f"prior_games {prior_games}; expected 0 or more")
    index: dict[str, int] = {}
    tally: Counter[tuple[int, int, float]] = Counter()
    for game in games:
        i, j = (index.setdefault(name, len(index)) for name in (game.a, game.b))
        tally[(i, j, game.score) if i < j else (j, i, 1 - game.score)] += 1
    if not index:
        raise UserInputError("no games to rate; expected comparisons between two or more players")
    players = list(index)
    if anchor is not None and anchor not in index:
        raise UserInputError(f"anchor {anchor!r} played no game; expected one of {', '.join(players)}")
    if prior_games == 0:
        unbounded = _unbounded(len(players), list(tally), list(tally.values()))
        if unbounded:
            raise UserInputError(
                f"{players[unbounded[0]]} won or lost every game, so its maximum-likelihood rating is "
                "infinite; expected prior_games > 0"
            )
    return players, list(tally), list(tally.values())


def _unbounded(players: int, cells: Sequence[tuple[int, int, float]], counts: Sequence[int]) -> list[int]:
    """Players who played and won every game or lost every game: without a
    prior their maximum-likelihood strength is infinite (or zero)."""
    points, played = [0.0] * players, [0] * players
    for (i, j, score), n in zip(cells, counts):
        points[i] += n * score
        points[j] += n * (1 - score)
        played[i] += n
        played[j] += n
    return [i for i in range(players) if played[i] and points[i] in (0, played[i])]


def leaderboard(
    games: Iterable[Game],
    *,
    anchor: str | None = None,
    prior_games: float = 0.1,
    rounds: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    elo_k: float = 32.0,
) -> list[Rating]:
    """The ranked leaderboard: Bradley-Terry ratings (anchor, or the mean, at
    1000) with bootstrap intervals over `rounds` resamples of the games,
    games, wins/ties/losses, win rate and online Elo. Best first; equal
    ratings by name."""
    games = list(games)
    if rounds < 0 or not 0 < confidence < 1:
        raise UserInputError(f"rounds {rounds}, confidence {confidence}; expected rounds >= 0 and 0 < confidence < 1")
    players, cells, counts = _prepare(games, prior_games, anchor)
    anchor_index = players.index(anchor) if anchor is not None else None
    everyone = range(len(players))
    logs = _fit(len(players), _totals(cells, counts), prior_games)
    ratings = _anchored(logs, everyone, anchor_index)

    samples: list[list[float]] = [[] for _ in players]
    rng = random.Random(seed)
    cumulative = [sum(counts[: k + 1]) for k in range(len(counts))]
    for _ in range(rounds):
        drawn = Counter(rng.choices(range(len(cells)), cum_weights=cumulative, k=len(games)))
        resampled = [drawn.get(k, 0) for k in range(len(cells))]
        present = sorted({p for (i, j, _), n in zip(cells, resampled) if n for p in (i, j)})
        if anchor_index is not None and anchor_index not in present:
            continue  # nothing to measure the others against in this round
        if prior_games == 0 and _unbounded(len(players), cells, resampled):
            continue  # an infinite rating this round: no finite value to record
        round_logs = _fit(len(players), _totals(cells, resampled), prior_games, start=logs, held=present[0])
        round_ratings = _anchored(round_logs, present, anchor_index)
        for i in present:
            samples[i].append(round_ratings[i])

    tail = (1 - confidence) / 2
    record = {name: [0, 0, 0] for name in players}  # wins, ties, losses
    for game in games:
        outcome = {1: 0, 0.5: 1, 0: 2}[game.score]
        record[game.a][outcome] += 1
        record[game.b][2 - outcome] += 1
    elo = online_elo(games, k=elo_k)
    rows = []
    for i, name in enumerate(players):
        wins, ties, losses = record[name]
        played = wins + ties + losses
        low = _percentile(samples[i], tail) if samples[i] else None
        high = _percentile(samples[i], 1 - tail) if samples[i] else None
        rows.append((ratings[i], name, low, high, played, wins, ties, losses, (wins + ties / 2) / played, elo[name]))
    rows.sort(key=lambda row: (-row[0], row[1]))
    return [
        Rating(rank, name, rating, low, high, played, wins, ties, losses, rate, elo_rating)
        for rank, (rating, name, low, high, played, wins, ties, losses, rate, elo_rating) in enumerate(rows, start=1)
    ]
