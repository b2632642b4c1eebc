"""The report of a pipeline run: each stage's key numbers side by side.

A miniature of the InstructGPT tables, read from the store after (or while) a
run goes: what pretraining did to the held-out loss, what SFT did to the
judge's score, how often the reward model agrees with the held-out rankings,
and how often the judge (and people, where they ranked) prefer the PPO and
DPO policies to the SFT model they started from, with the KL they paid.

    report = build_report(store, run_id)
    report.to_json()

Win rates come from the run's arena: rank stages with `pairwise = true`,
whose items pair answers of different checkpoints to the same held-out
prompt. A tie counts half (the same rule as the leaderboard). Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.feedback.leaderboard import Game, Rating, games_from_judgements, leaderboard
from engine.feedback.records import is_person
from engine.feedback.stored.selection import Selection, selected_judgements
from store import MetricSummary, StageRead, Store

#: per stage kind: (label, metric key, how to show it) in the order shown
HEADLINES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "pretrain": (("held-out loss", "eval/loss", "first_last"), ("perplexity", "eval/perplexity", "last")),
    # What fits every stage's data comes first; a judge's score only shows where the stage named a judge.
    "sft": (("held-out loss", "eval/loss", "first_last"), ("judge score", "eval/judge_score", "first_last"),
            ("exact answers", "eval/judge_exact", "last")),
    "sample": (("answers that ended", "sample/finished_fraction", "last"),),
    "rank": (("judgements", "rank/judgements", "last"),),
    "reward": (("held-out pair accuracy", "eval/accuracy", "last"),
               ("accuracy on people's pairs", "eval/accuracy_people", "last"), ("margin", "eval/margin", "last")),
    # The preference-optimisation family shares DPO's rows (KTO logs no accuracy: it has no pairs to order).
    **dict.fromkeys(("dpo", "kto", "orpo", "cpo"), (
        ("log-prob margin, held-out", "eval/logp_margin", "first_last"), ("held-out loss", "eval/loss", "last"),
        ("accuracy", "eval/rewards/accuracies", "last"), ("judge score", "eval/judge_score", "first_last"))),
    "ppo": (("reward-model score, held-out", "eval/rm_score", "first_last"),
            ("reward-model score, rollouts", "ppo/rm_score", "first_last"), ("KL to SFT", "ppo/kl", "last"),
            ("judge score", "eval/judge_score", "first_last"), ("answers that ended", "ppo/ended_fraction", "last")),
    # RLOO and GRPO log their reward-model score and KL under PPO's names, so the rows compare.
    "rloo": (("reward-model score", "ppo/rm_score", "first_last"), ("KL to SFT", "ppo/kl", "last"),
             ("judge score", "eval/judge_score", "first_last")),
    "grpo": (("reward-model score", "ppo/rm_score", "first_last"), ("KL to SFT", "ppo/kl", "last"),
             ("judge score", "eval/judge_score", "first_last")),
    # Online DPO: DPO's accuracy and judge rows, on pairs it samples itself; no held-out pairs, so the
    # score of its own samples (reward model and/or judges) and the KL it paid stand in for the margin.
    "online_dpo": (("score of its samples", "train/objective/scores", "first_last"),
                   ("accuracy", "train/rewards/accuracies", "last"), ("KL to SFT", "ppo/kl", "last"),
                   ("judge score", "eval/judge_score", "first_last")),
}


@dataclass(frozen=True)
class Figure:
    label: str
    key: str
    first: float | None
    last: float


@dataclass(frozen=True)
class StageFigures:
    stage: str
    kind: str
    status: str
    figures: tuple[Figure, ...]


@dataclass(frozen=True)
class WinRate:
    """How often `policy` beat `baseline` on the same prompt, ties counting half."""

    policy: str
    baseline: str
    annotators: str  # "judges" or "people"
    wins: int
    ties: int
    losses: int

    @property
    def games(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.games if self.games else None


@dataclass(frozen=True)
class Report:
    run_id: int
    run_name: str
    status: str
    stages: tuple[StageFigures, ...]
    win_rates: tuple[WinRate, ...] = ()
    leaderboard: tuple[Rating, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "run_name": self.run_name, "status": self.status,
            "stages": [{"stage": s.stage, "kind": s.kind, "status": s.status,
                        "figures": [{"label": f.label, "key": f.key, "first": f.first, "last": f.last}
                                    for f in s.figures]} for s in self.stages],
            "win_rates": [{"policy": w.policy, "baseline": w.baseline, "annotators": w.annotators,
                           "wins": w.wins, "ties": w.ties, "losses": w.losses, "rate": w.rate}
                          for w in self.win_rates],
            "leaderboard": [{"rank": r.rank, "player": r.player, "rating": r.rating, "ci_low": r.ci_low,
                             "ci_high": r.ci_high, "games": r.games, "win_rate": r.win_rate}
                            for r in self.leaderboard],
            "notes": list(self.notes),
        }


def build_report(store: Store, run_id: int, *, baseline_kind: str = "sft") -> Report:
    run = store.get_run(run_id)
    stages = store.list_stages(run_id=run_id)
    summaries = store.metric_summaries(run_id=run_id)
    figures = tuple(_stage_figures(stage, summaries) for stage in stages)

    names = _checkpoint_names(stages)
    # The stages as submitted (a stage's own config is replaced by what it resolved when it ran).
    specs = run.spec.get("stages", {})
    arena_batches = [
        str(b.id) for b in store.list_sample_batches(run_id=run_id)
        if any(s.kind == "rank" and specs.get(s.name, s.config).get("pairwise")
               and _ranks_batch(specs.get(s.name, s.config), b.stage_id, stages) for s in stages)
    ]
    win_rates: list[WinRate] = []
    board: list[Rating] = []
    notes: list[str] = []
    if arena_batches:
        records = selected_judgements(store, Selection(batches=tuple(arena_batches)))
        games = [_renamed(g, names) for g in games_from_judgements(records)]
        if games:
            board = leaderboard(games)
        baseline = next((s.name for s in stages if s.kind == baseline_kind), None)
        if baseline is not None:
            for who, chosen in (("judges", [r for r in records if not is_person(r.annotator or "")]),
                                ("people", [r for r in records if is_person(r.annotator or "")])):
                chosen_games = [_renamed(g, names) for g in games_from_judgements(chosen)]
                for policy in _players(chosen_games):
                    if policy != baseline:
                        rate = _win_rate(chosen_games, policy, baseline, who)
                        if rate.games:
                            win_rates.append(rate)
    else:
        notes.append("no arena in this run: win rates need a rank stage with pairwise = true")
    return Report(run_id=run.id, run_name=run.name, status=run.status.value, stages=figures,
                  win_rates=tuple(win_rates), leaderboard=tuple(board), notes=tuple(notes))


def _stage_figures(stage: StageRead, summaries: Iterable[MetricSummary]) -> StageFigures:
    mine = {m.key: m for m in summaries if m.stage_id == stage.id}
    shown = []
    for label, key, how in HEADLINES.get(stage.kind, ()):
        summary = mine.get(key)
        if summary is None:
            continue
        first = summary.first if how == "first_last" and summary.count > 1 else None
        shown.append(Figure(label=label, key=key, first=first, last=summary.last))
    return StageFigures(stage=stage.name, kind=stage.kind, status=stage.status.value, figures=tuple(shown))


def _ranks_batch(rank_spec: dict[str, Any], batch_stage_id: int | None, stages: list[StageRead]) -> bool:
    """Whether a rank stage's `from` is the stage that wrote the batch."""
    source = str(rank_spec.get("from") or "").removeprefix("stage:")
    return any(s.id == batch_stage_id and s.name == source for s in stages)


def _checkpoint_names(stages: list[StageRead]) -> dict[str, str]:
    """A stage's output folder -> the stage's name, so the leaderboard reads `ppo`, not a path."""
    names = {}
    for stage in stages:
        if stage.output_path:
            names[stage.output_path] = stage.name
            names[str(Path(stage.output_path).resolve())] = stage.name
    return names


def _renamed(game: Game, names: dict[str, str]) -> Game:
    return Game(a=names.get(game.a, game.a), b=names.get(game.b, game.b), score=game.score)


def _players(games: Iterable[Game]) -> list[str]:
    return sorted({p for g in games for p in (g.a, g.b)})


def _win_rate(games: Iterable[Game], policy: str, baseline: str, annotators: str) -> WinRate:
    wins = ties = losses = 0
    for game in games:
        if {game.a, game.b} != {policy, baseline}:
            continue
        score = game.score if game.a == policy else 1 - game.score
        wins += score == 1
        ties += score == 0.5
        losses += score == 0
    return WinRate(policy=policy, baseline=baseline, annotators=annotators, wins=wins, ties=ties, losses=losses)
