"""Headless output: what `rlhf run`, `validate`, `ls`, `status`, `logs` and `metrics` print.

Three audiences: a person at a TTY (a progress bar per stage, tables), a
log file or pipe (plain lines), and scripts (`--json`: one JSON object per
line while following, one JSON document otherwise). Untrusted text (log
lines, errors) always goes through `printable` and `Text`, never markup.

JSON output is strict JSON: a value that is not a finite number (a diverged
loss is stored as inf) is written as null, never as `NaN` or `Infinity`,
which Python's json module writes by default and most other parsers refuse.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import (
    Engine,
    LifecycleEvent,
    LogEmitted,
    MetricsLogged,
    RunDetail,
    RunFinished,
    Series,
    StageProgress,
)

from .literal import printable

if TYPE_CHECKING:
    from engine.runtime.plan import PipelinePlan, StagePlan
    from store import MetricSummary, RunRead, StageRead

#: metrics worth a line of their own when following without a progress bar
_HEADLINE_PREFIXES = ("eval/",)
#: the Trainer's timing figures: noise next to the losses
_TIMING_KEYS = {"runtime", "samples_per_second", "steps_per_second"}


def emit_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up now, not at import: tests and callers may have replaced it
    out.write(json.dumps(finite(data), default=str, allow_nan=False) + "\n")
    out.flush()


def finite(data: Any) -> Any:
    """`data` with every NaN and infinity (in dicts, lists and tuples, at any depth) as None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data


async def follow(
    engine: Engine, run: RunRead, *, json_mode: bool, show_logs: bool, console: Console
) -> RunFinished:
    """Print a run's progress until it ends; return how it ended."""
    if json_mode:
        async for update in engine.follow(run.id, logs=show_logs):
            emit_json(update.to_json())
            if isinstance(update, RunFinished):
                return update
    elif console.is_terminal:
        return await _follow_with_bars(engine, run, show_logs=show_logs, console=console)
    else:
        async for update in engine.follow(run.id, logs=show_logs):
            line = _plain_line(update)
            if line:
                console.print(Text(printable(line)), soft_wrap=True)
            if isinstance(update, RunFinished):
                return update
    raise AssertionError("follow ended without RunFinished")  # engine.follow always ends with it


async def _follow_with_bars(engine: Engine, run: RunRead, *, show_logs: bool, console: Console) -> RunFinished:
    # Imported here: only a run followed on a terminal draws bars, and `rlhf tui` imports this module.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}
    latest: dict[str, dict[str, float]] = {}
    with progress:
        async for update in engine.follow(run.id, logs=show_logs):
            if isinstance(update, StageProgress):
                if update.stage not in tasks:
                    tasks[update.stage] = progress.add_task(update.stage, total=update.total, info="")
                progress.update(tasks[update.stage], completed=update.step, total=update.total,
                                info=_stage_info(update.status, latest.get(update.stage, {})))
            elif isinstance(update, MetricsLogged):
                latest.setdefault(update.stage, {}).update(update.values)
                if update.stage in tasks:
                    progress.update(tasks[update.stage], info=_stage_info("running", latest[update.stage]))
                line = _plain_line(update)  # evaluations get a line of their own
                if line:
                    progress.console.print(Text(printable(line)), soft_wrap=True)
            elif isinstance(update, (LifecycleEvent, LogEmitted)):
                line = _plain_line(update)
                if line:
                    progress.console.print(Text(printable(line)), soft_wrap=True)
            elif isinstance(update, RunFinished):
                return update
    raise AssertionError("follow ended without RunFinished")


def _stage_info(status: str, metrics: dict[str, float]) -> str:
    shown = [f"{k} {metrics[k]:.4g}" for k in ("train/loss", "eval/loss") if k in metrics]
    if "train/tokens_per_second" in metrics:
        shown.append(f"{metrics['train/tokens_per_second']:.0f} tok/s")
    return "  ".join([status if status != "running" else "", *shown]).strip()


def _plain_line(update: Any) -> str | None:
    if isinstance(update, LifecycleEvent):
        if update.event == "CheckpointSaved":
            return f"[{update.stage}] checkpoint at step {update.data.get('step')}: {update.data.get('path')}"
        detail = ""
        if update.data.get("error"):
            detail = f": {update.data['error']}"
        elif update.event == "StageStarted":
            resume = update.data.get("resume_from")
            detail = f" on {update.data.get('device')}" + (f", resuming from {resume}" if resume else "")
        elif update.event == "StageWaiting":
            detail = f" for a {update.data.get('device')} slot"
        where = f"[{update.stage}] " if update.stage else ""
        return f"{where}{update.event}{detail}"
    if isinstance(update, MetricsLogged):
        headline = {k: v for k, v in update.values.items()
                    if k.startswith(_HEADLINE_PREFIXES) and k.split("/")[-1] not in _TIMING_KEYS}
        if headline:
            values = "  ".join(f"{k} {v:.4g}" for k, v in sorted(headline.items()))
            return f"[{update.stage}] step {update.step}: {values}"
    if isinstance(update, LogEmitted):
        return f"[{update.stage or 'run'}] {update.message}"
    if isinstance(update, RunFinished):
        return f"run {update.status}" + (f": {update.error}" if update.error else "")
    return None


# --- the plan (rlhf validate) ---------------------------------------------------


def print_plan(plan: PipelinePlan, console: Console, *, run_command: Sequence[str]) -> None:
    """A validated spec's stages in the order they would run, what each reads, where it would run."""
    count = f"{len(plan.stages)} stage{'s' if len(plan.stages) != 1 else ''}"
    console.print(Text(printable(f"{plan.source}: valid; run '{plan.name}', {count} in this order:"), style="bold"),
                  soft_wrap=True)
    if plan.description:
        console.print(Text(printable(plan.description), style="dim"), soft_wrap=True)
    for position, stage in enumerate(plan.stages, start=1):
        after = f", after {', '.join(stage.after)}" if stage.after else ""
        console.print(Text(printable(f"{position:>3}. {stage.name} ({stage.kind}{after})")), soft_wrap=True)
        rows = [(alias, ", ".join(value) if isinstance(value, list) else value)
                for alias, value in stage.sources.items()]
        rows.append(("runs on", _runs_on(stage)))
        rows += [("warning", note) for note in stage.notes]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            console.print(Text(printable(f"       {label:<{width}}  {value}"),
                               style="yellow" if label == "warning" else ""), soft_wrap=True)
    console.print(Text(printable(f"nothing was started or recorded; `{shlex.join(run_command)}` runs it")),
                  soft_wrap=True)


def _runs_on(stage: StagePlan) -> str:
    if stage.device_here == "none":
        return "no device (it waits for no device slot)"
    where = "the CPU" if stage.device_here == "cpu" else f"{stage.slots} GPU{'s' if stage.slots != 1 else ''}"
    if stage.device != "auto":
        where += f" (device = {stage.device})"
    processes = f"{stage.processes} process{'es' if stage.processes != 1 else ''}"
    if stage.machines > 1:
        processes += f" on each of {stage.machines} machines"
    if stage.accelerate_config is not None:
        processes += f" through accelerate, as {stage.accelerate_config} says"
    elif stage.strategy is not None:
        processes += f" through accelerate, strategy {stage.strategy}"
    return f"{where}, {processes}"


# --- tables -------------------------------------------------------------------


def _ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def run_json(run: RunRead) -> dict[str, Any]:
    return run.model_dump(mode="json", exclude={"spec_text", "spec"})


def print_runs(runs: Sequence[RunRead], console: Console) -> None:
    if not runs:
        console.print("no runs yet: `rlhf run SPEC` or `rlhf demo`")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "STATUS", "CREATED", "ERROR"):
        table.add_column(column)
    for run in runs:
        table.add_row(str(run.id), Text(run.name), run.status.value, _ago(run.created_at),
                      Text(printable((run.error or "").splitlines()[0] if run.error else "")))
    console.print(table)


def detail_json(detail: RunDetail, summaries: Sequence[MetricSummary]) -> dict[str, Any]:
    return {
        **run_json(detail.run),
        "stages": [
            {**s.model_dump(mode="json"), "stalled": stage_status(s) == "stalled",
             "metrics": {m.key: {"first": m.first, "last": m.last, "min": m.low, "max": m.high,
                                 "step": m.last_step, "count": m.count}
                         for m in summaries if m.stage_id == s.id}}
            for s in detail.stages
        ],
        "checkpoints": [c.model_dump(mode="json") for c in detail.checkpoints],
    }


def print_detail(detail: RunDetail, summaries: Sequence[MetricSummary], console: Console) -> None:
    run = detail.run
    console.print(Text(f"run {run.id} '{run.name}': {run.status.value}", style="bold"))
    if run.error:
        console.print(Text(printable(run.error)))
    table = Table(box=None, header_style="bold")
    for column in ("STAGE", "KIND", "STATUS", "STEP", "DEVICE", "KEY METRICS"):
        table.add_column(column)
    for stage in detail.stages:
        mine = {m.key: m for m in summaries if m.stage_id == stage.id}
        metrics = "  ".join(_first_to_last(k, mine[k]) for k in _KEY_METRICS if k in mine)
        step = f"{stage.step}/{stage.total}" if stage.total else str(stage.step)
        table.add_row(Text(stage.name), stage.kind, stage_status(stage), step, stage.device or "-", metrics)
    console.print(table)
    for stage in detail.stages:
        if stage_status(stage) == "stalled" and stage.error:
            console.print(Text(printable(f"{stage.name}: {stage.error}")))
    finals = [c for c in detail.checkpoints if c.is_final]
    for checkpoint in finals:
        console.print(Text(f"output: {checkpoint.path}"))


def stage_status(stage: StageRead) -> str:
    """A stage's status as shown: `stalled` for a running stage whose step stopped advancing
    (the run process marks it in the stage's error while it runs on)."""
    if stage.status.value == "running" and (stage.error or "").startswith("stalled:"):
        return "stalled"
    return stage.status.value


#: what `rlhf status` shows first-to-last per stage: whichever of these a stage logs
_KEY_METRICS = (
    "train/loss", "eval/loss", "eval/perplexity",          # pretrain, SFT
    "eval/judge_score",                                     # SFT on the demo task
    "sample/tokens_per_second", "sample/finished_fraction",  # sample
    "rank/judgements",                                      # rank
    "eval/accuracy", "eval/accuracy_people",                # reward
    "score/mean", "score/agreement_people",                 # score
    "eval/logp_margin",                                     # dpo
    "ppo/rm_score", "ppo/kl",                               # ppo, rloo, grpo
)


def _first_to_last(key: str, summary: MetricSummary) -> str:
    if summary.count > 1:
        return f"{key} {summary.first:.4g} -> {summary.last:.4g}"
    return f"{key} {summary.last:.4g}"


def print_series(series: Sequence[Series], console: Console) -> None:
    if not series:
        console.print("no metrics logged")
        return
    for s in series:
        console.print(Text(f"{s.stage} {s.key} ({len(s.points)} points)", style="bold"))
        for p in s.points:
            console.print(f"  {p.step:>8g}  {p.value:.6g}", highlight=False)


def series_json(series: Sequence[Series]) -> list[dict[str, Any]]:
    return [
        {"stage": s.stage, "key": s.key,
         "points": [{"step": p.step, "value": p.value, "wall_time": p.wall_time} for p in s.points]}
        for s in series
    ]


def print_report(report: Any, console: Console) -> None:
    """A run's report (engine.recipe.report.Report): each stage's key numbers, the win
    rates against SFT and the arena leaderboard."""
    for renderable in report_renderables(report):
        console.print(renderable)


def report_renderables(report: Any) -> list[Any]:
    """The report as Rich renderables, for the terminal and the console's report screen alike."""
    shown: list[Any] = [Text(f"report of run {report.run_id} '{printable(report.run_name)}': {report.status}",
                             style="bold")]
    table = Table(box=None, header_style="bold")
    for column in ("STAGE", "KIND", "FIGURE", "BEFORE", "AFTER"):
        table.add_column(column)
    for stage in report.stages:
        if not stage.figures:
            table.add_row(Text(stage.stage), stage.kind, Text(stage.status, style="dim"), "", "")
        for index, figure in enumerate(stage.figures):
            table.add_row(Text(stage.stage) if index == 0 else "", stage.kind if index == 0 else "", figure.label,
                          "" if figure.first is None else f"{figure.first:.4g}", f"{figure.last:.4g}")
    shown.append(table)
    if report.win_rates:
        rates = Table(box=None, header_style="bold", title="win rate against the baseline (ties count half)",
                      title_justify="left")
        for column in ("POLICY", "VS", "BY", "WIN RATE", "W/T/L"):
            rates.add_column(column)
        for rate in report.win_rates:
            rates.add_row(Text(rate.policy), Text(rate.baseline), rate.annotators,
                          "-" if rate.rate is None else f"{rate.rate:.0%}", f"{rate.wins}/{rate.ties}/{rate.losses}")
        shown.append(rates)
    if report.leaderboard:
        board = Table(box=None, header_style="bold", title="arena (Bradley-Terry, 95% interval)",
                      title_justify="left")
        for column in ("#", "MODEL", "RATING", "95% CI", "GAMES", "WIN RATE"):
            board.add_column(column)
        for r in report.leaderboard:
            interval = "-" if r.ci_low is None or r.ci_high is None else f"{r.ci_low:.0f} to {r.ci_high:.0f}"
            board.add_row(str(r.rank), Text(printable(r.player)), f"{r.rating:.0f}", interval, str(r.games),
                          f"{r.win_rate:.0%}")
        shown.append(board)
    shown.extend(Text(note, style="dim") for note in report.notes)
    return shown
