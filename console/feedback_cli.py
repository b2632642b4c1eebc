"""`rlhf rank`, `rlhf prefs`, `rlhf arena` and `rlhf score`: human feedback from the command line.

- `rlhf rank` opens the console's rank screen on a batch (people), or with
  `--auto JUDGE` has a judge rank it as an engine job (recorded as
  `judge:NAME`); `--list` shows the batches and how far their ranking is.
  `--order active` serves the items a small reward-model ensemble is least
  sure of first (an engine job keeps the order; `--refresh-every N`).
- `rlhf prefs stats|import|export|gold`: agreement and outcomes per batch and
  each annotator's quality (gold accuracy, agreement, pace, skips); TRL,
  HH, ranked-list and judgement-table files in; TRL, KTO, the judgement
  table and the raw append-only history out; `gold` marks a share of a
  batch's items as gold, answered by a judge or a lead annotator, or with
  `--file` mixes a file's known-answer pairs into the batch as new gold
  items, at random places among the items still to judge.
- `rlhf arena`: a blind comparison of checkpoints on held-out prompts (`new`),
  and the Bradley-Terry leaderboard with confidence intervals.
- `rlhf score`: a reward model scores a batch (as an engine job), and how far
  it agrees with the people and judges who ranked the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import Engine, RunFinished, UserInputError
from engine.feedback.importers import IMPORT_FORMATS
from engine.feedback.pairs import TIE_POLICIES
from engine.feedback.records import is_person

from . import headless
from .literal import printable

if TYPE_CHECKING:
    from engine.feedback.quality import AnnotatorQuality
    from engine.feedback.records import Judgement
    from engine.feedback.stored.gold import GoldImported
    from engine.feedback.stored.selection import Selection
    from engine.recipe.reward_agreement import Agreement, BatchScores
    from store import RankBatch

# The store adapters (the ORM), the job specs (pydantic) and the feedback logic beyond the two
# constants the parser needs are imported by the commands that use them (the reward agreement
# is the engine's, Engine.batch_scores): `rlhf tui` and `rlhf ls` import this module too.

EXIT_OK, EXIT_RUN_FAILED = 0, 1


def add_rank_command(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "rank", parents=[common],
        help="rank responses side by side in the console, or have a judge rank them (--auto)",
        description="Rank a sample batch: opens the console's rank screen; with --auto a judge ranks it.",
    )
    p.add_argument("--batch", "-b", help="sample batch id or name (default: the newest with items left)")
    p.add_argument("--annotator", "-a", help="your name in the judgements (default: your OS user name)")
    p.add_argument("--auto", metavar="JUDGE",
                   help="rank with a judge instead: `demo` or a Python callable module:function")
    p.add_argument("--judgements-per-item", "-n", type=int, default=1,
                   help="different annotators each item goes to, when the batch is first ranked")
    p.add_argument("--order", choices=("batch", "active"), default="batch",
                   help="batch = as sampled; active = what a reward-model ensemble trained on the judgements "
                        "so far is least sure of first (an engine job keeps the order; it runs until the batch "
                        "is done or `rlhf cancel`)")
    p.add_argument("--refresh-every", type=int, default=None, metavar="N",
                   help="with --order active: retrain the ensemble and re-order after every N new judgements")
    p.add_argument("--list", action="store_true", help="list the batches and their ranking progress")
    p.add_argument("--json", action="store_true", help="print JSON (with --list or --auto)")


def annotator_name(args: argparse.Namespace) -> str:
    """--annotator, else the OS user: who a judgement is from, always recorded."""
    if getattr(args, "annotator", None):
        return str(args.annotator)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return os.environ.get("USER") or f"uid{os.getuid()}"


def wants_rank_console(args: argparse.Namespace) -> bool:
    return args.command == "rank" and not (args.auto or args.list or args.json)


async def cmd_rank(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.jobs import rank_spec

    feedback = engine.reads.feedback
    if args.list:
        batches = await asyncio.to_thread(feedback.rank_batches)
        if args.json:
            headless.emit_json([_batch_json(b) for b in batches])
        else:
            _print_batches(batches, out)
        return EXIT_OK
    batch_id = await asyncio.to_thread(feedback.find_batch, args.batch)
    run = await engine.submit(rank_spec(batch_id, judge=args.auto, judgements_per_item=args.judgements_per_item,
                                        order=args.order, refresh_every=args.refresh_every))
    finished: RunFinished | None = None
    if args.json:
        async for update in engine.follow(run.id, logs=False):
            headless.emit_json(update.to_json())
            if isinstance(update, RunFinished):
                finished = update
    else:
        out.print(Text(f"run {run.id}: {args.auto} ranks batch {batch_id} (recorded as judge:{args.auto})"))
        finished = await headless.follow(engine, run, json_mode=False, show_logs=False, console=out)
        progress = await asyncio.to_thread(feedback.progress, batch_id=batch_id)
        out.print(Text(f"batch {batch_id}: {progress.done}/{progress.total} judgements, "
                       f"{progress.annotators} annotator(s)"))
    if finished is None or finished.status != "succeeded":
        error = finished.error if finished else "no outcome"
        out.print(Text(printable(f"ranking failed: {error} (rlhf logs {run.id})")))
        return EXIT_RUN_FAILED
    return EXIT_OK


async def start_active_order(engine: Engine, args: argparse.Namespace) -> int | None:
    """`rlhf rank --order active` (people): submit the rank job that orders the
    batch and waits for people, before the console opens. Returns its run id
    (None: batch order, nothing to start)."""
    from engine.runtime.jobs import rank_spec

    if args.refresh_every is not None and args.order != "active":
        raise UserInputError("--refresh-every re-orders an active batch: add --order active")
    if args.order != "active":
        return None
    batch_id = await asyncio.to_thread(engine.reads.feedback.find_batch, args.batch)
    run = await engine.submit(rank_spec(batch_id, judge=None, judgements_per_item=args.judgements_per_item,
                                        order="active", refresh_every=args.refresh_every))
    return run.id


def _batch_json(batch: RankBatch) -> dict[str, Any]:
    return {"id": batch.id, "name": batch.name, "run_id": batch.run_id, "items": batch.items,
            "judgements_needed": batch.total, "judgements_done": batch.done,
            "created_at": batch.created_at.isoformat()}


def _print_batches(batches: list[RankBatch], out: Console) -> None:
    if not batches:
        out.print("no sample batches yet: a `sample` stage makes one, `rlhf prefs import` another")
        return
    table = Table(box=None, header_style="bold")
    for column in ("BATCH", "NAME", "ITEMS", "JUDGED", "RUN"):
        table.add_column(column)
    for b in batches:
        table.add_row(str(b.id), Text(printable(b.name)), str(b.items), f"{b.done}/{b.total}",
                      str(b.run_id) if b.run_id else "-")
    out.print(table)


# --- rlhf prefs ----------------------------------------------------------------------


def add_prefs_command(commands: Any, common: argparse.ArgumentParser) -> None:
    prefs = commands.add_parser(
        "prefs", parents=[common], help="preference data: agreement stats, import and export",
        description="The judgements in the store: agreement and outcomes, import, export.",
    )
    actions = prefs.add_subparsers(dest="prefs_command", metavar="ACTION", required=True)

    p = actions.add_parser("stats", parents=[common], help="judgements, outcomes and agreement per batch")
    p.add_argument("--batch", "-b", action="append", default=[], help="only this batch (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser("gold", parents=[common],
                           help="gold items in a batch (their answer known, never shown as such): a share of its "
                                "items answered by a judge or a lead, or known-answer pairs from a file mixed in")
    p.add_argument("--batch", "-b", help="sample batch id or name (default: the newest with items left)")
    p.add_argument("--share", type=float, default=None,
                   help="share of the batch's items to make gold, 0-1 (required with --judge/--lead; with --file "
                        "at most this share, default every pair of the file)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--judge", help="the answers come from this judge: `demo` or module:function")
    who.add_argument("--lead", help="the answers are this (lead) annotator's verdicts on the batch")
    who.add_argument("--file", type=Path,
                     help="known-answer pairs to mix in as new items (chosen over rejected): what `prefs import` "
                          "reads, TRL, HH, ranked lists or judgement rows, .jsonl(.gz) or .parquet")
    p.add_argument("--format", choices=IMPORT_FORMATS, default="auto",
                   help="with --file: the file's format (auto = from the first record)")
    p.add_argument("--seed", type=int, default=0, help="which items (or pairs) are drawn, and where they go")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser("import", parents=[common], help="store a preference file as a judged batch")
    p.add_argument("file", type=Path, help="JSONL or parquet (or the CSV judgement table)")
    p.add_argument("--format", choices=IMPORT_FORMATS, default="auto",
                   help="trl (prompt/chosen/rejected), hh (Anthropic HH dialogues), ranked (prompt/responses/"
                        "ranking), judgements (our table); auto = from the first record")
    p.add_argument("--name", help="batch name (default import:FILE)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser("export", parents=[common], help="write judgements as training data or as a table")
    p.add_argument("--out", type=Path, required=True, help="file to write (.jsonl, .parquet, or .csv for tables)")
    p.add_argument("--format", choices=("trl", "kto", "judgements", "raw"), default="trl",
                   help="trl = prompt/chosen/rejected pairs; kto = prompt/completion/label; judgements = the "
                        "live judgements (re-importable); raw = every row ever written, undone and edited ones too")
    p.add_argument("--ties", choices=TIE_POLICIES, default="drop",
                   help="drop = ties and both-bad make no pairs; margin = margins by rank distance, ties as "
                        "two pairs with margin 0")
    p.add_argument("--batch", "-b", action="append", default=[], help="only this batch (repeatable)")
    p.add_argument("--annotators", choices=("all", "people", "judges", "imported"), default="all",
                   help="whose judgements: everyone's, people's, judges' (judge:NAME) or imported ones")
    p.add_argument("--annotator", action="append", default=[], help="only this annotator (repeatable)")
    p.add_argument("--conversational", action="store_true", help="write prompts and answers as chat messages")


async def cmd_prefs(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    action = {"stats": _prefs_stats, "import": _prefs_import, "export": _prefs_export,
              "gold": _prefs_gold}[args.prefs_command]
    return await action(engine, args, out)


async def _prefs_stats(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.feedback.agreement import agreement_from_judgements
    from engine.feedback.stored.selection import to_record

    def work() -> tuple[list[dict[str, Any]], list[AnnotatorQuality]]:
        feedback = engine.reads.feedback
        wanted = {feedback.find_batch(ref) for ref in args.batch}
        rows = []
        for batch in feedback.rank_batches():
            if (wanted and batch.id not in wanted) or not batch.items:
                continue
            live = feedback.live_judgements(batch_ids=[batch.id])
            records = [to_record(j) for j in live]
            people = [r for r in records if is_person(r.annotator or "")]
            everyone, humans = agreement_from_judgements(records), agreement_from_judgements(people)
            rows.append({
                **_batch_json(batch),
                "annotators": dict(Counter(j.annotator for j in live)),
                "outcomes": dict(Counter(j.outcome for j in live)),
                "agreement": _agreement_json(everyone), "agreement_people": _agreement_json(humans),
                "mean_seconds": _mean([j.seconds for j in live if j.seconds is not None and is_person(j.annotator)]),
                "annotator_quality": [q.to_json() for q in engine.annotation.quality([batch.id])],
            })
        # the table: each annotator over every batch shown
        quality = engine.annotation.quality([row["id"] for row in rows]) if rows and not args.json else []
        return rows, quality

    rows, quality = await asyncio.to_thread(work)
    if args.json:
        headless.emit_json(rows)
        return EXIT_OK
    if not rows:
        out.print("no judgements yet: `rlhf rank` to rank, `rlhf prefs import FILE` to import")
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    for column in ("BATCH", "NAME", "JUDGED", "ANNOTATORS", "OUTCOMES", "AGREEMENT"):
        table.add_column(column)
    for row in rows:
        annotators = ", ".join(f"{name} {count}" for name, count in row["annotators"].items())
        outcomes = ", ".join(f"{name} {count}" for name, count in row["outcomes"].items())
        done = f"{row['judgements_done']}/{row['judgements_needed']}"
        table.add_row(str(row["id"]), Text(printable(row["name"])), done,
                      Text(printable(annotators)), outcomes, _agreement_text(row["agreement"]))
    out.print(table)
    _print_quality(quality, out)
    return EXIT_OK


def _print_quality(quality: list[AnnotatorQuality], out: Console) -> None:
    """Per annotator over the batches shown: gold accuracy, agreement, pace, both bad, skips."""
    table = Table(box=None, header_style="bold")
    for column in ("ANNOTATOR", "JUDGED", "GOLD", "AGREES", "MEDIAN S", "BOTH BAD", "SKIPS"):
        table.add_column(column)
    for q in quality:
        gold = "-" if q.gold_accuracy is None else f"{q.gold_accuracy:.0%} of {q.gold_verdicts}"
        agrees = "-" if q.agreement is None else f"{q.agreement:.0%} ({q.agreement_pairs})"
        seconds = "-" if q.median_seconds is None else f"{q.median_seconds:.1f}"
        table.add_row(Text(printable(q.annotator)), str(q.verdicts), gold, agrees, seconds,
                      f"{q.both_bad_share:.0%}", f"{q.skip_share:.0%}")
    out.print(table)


async def _prefs_gold(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    if args.file is not None:
        return await _prefs_gold_file(engine, args, out)
    if args.share is None:
        raise UserInputError("--share is required with --judge or --lead: the share of the batch's items to make gold")
    if args.format != "auto":
        raise UserInputError("--format names the format of a --file; --judge and --lead read no file")

    def work() -> tuple[int, int]:
        batch_id = engine.reads.feedback.find_batch(args.batch)
        return batch_id, engine.annotation.mark_gold(batch_id=batch_id, share=args.share, judge=args.judge,
                                                     lead=args.lead, seed=args.seed)

    batch_id, gold = await asyncio.to_thread(work)
    if args.json:
        headless.emit_json({"batch_id": batch_id, "gold_items": gold})
    else:
        source = f"judge:{args.judge}" if args.judge else args.lead
        out.print(Text(printable(f"batch {batch_id}: {gold} gold items, answered by {source}")))
    return EXIT_OK


async def _prefs_gold_file(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    def work() -> GoldImported:
        batch_id = engine.reads.feedback.find_batch(args.batch)
        return engine.annotation.import_gold(batch_id=batch_id, path=args.file, share=args.share, seed=args.seed,
                                             format=args.format)

    done = await asyncio.to_thread(work)
    if args.json:
        headless.emit_json(done.to_json())
    elif done.added:
        left_out = f" ({done.in_batch} were items of the batch already)" if done.in_batch else ""
        out.print(Text(printable(f"batch {done.batch_id}: mixed {done.added} of {done.records} {done.format} pairs "
                                 f"from {args.file} in as gold items, among the items still to judge{left_out}; "
                                 f"{done.gold_items} of {done.items} items are gold now")))
    elif done.in_batch == done.records:
        out.print(Text(printable(f"batch {done.batch_id}: every pair of {args.file} is an item of it already: "
                                 "mixed none in")))
    else:
        out.print(Text(printable(f"batch {done.batch_id}: {done.gold_items} of {done.items} items are gold already, "
                                 f"at or over --share {args.share}: mixed none of {args.file} in")))
    return EXIT_OK


def _agreement_json(agreement: Any) -> dict[str, Any] | None:
    if agreement.items == 0:
        return None
    return {"items": agreement.items, "annotators": agreement.annotators, "percent": agreement.percent,
            "kappa": agreement.kappa, "method": agreement.method, "items_dropped": agreement.items_dropped}


def _agreement_text(agreement: dict[str, Any] | None) -> str:
    if agreement is None:
        return "- (needs items judged twice)"
    kappa = "n/a" if agreement["kappa"] is None else f"{agreement['kappa']:.2f}"
    return f"{agreement['percent']:.0f}% ({agreement['method']} kappa {kappa}, {agreement['items']} items)"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def _prefs_import(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    batch_id, result = await asyncio.to_thread(engine.annotation.import_file, args.file, format=args.format,
                                               name=args.name)
    if args.json:
        headless.emit_json({"batch_id": batch_id, "format": result.format, "records": result.records})
    else:
        out.print(Text(printable(f"imported {result.records} {result.format} records from {args.file} "
                                 f"as batch {batch_id}")))
    return EXIT_OK


async def _prefs_export(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.feedback.stored.selection import Selection

    selection = Selection(batches=tuple(args.batch), annotators=args.annotators, names=tuple(args.annotator))
    if args.format == "raw":
        count, path = await asyncio.to_thread(_write_raw, engine, selection, args.out)
    else:
        records = await engine.judgements(selection)
        if not records:
            raise UserInputError("no judgements match (rlhf prefs stats shows what there is)")
        count, path = await asyncio.to_thread(_write_records, records, args)
    out.print(Text(printable(f"wrote {count} {args.format} rows to {path}")))
    return EXIT_OK


def _write_records(records: list[Judgement], args: argparse.Namespace) -> tuple[int, Path]:
    """The judgements in the asked-for format (trl, kto, or the judgement table): rows written, file."""
    from engine.feedback.exporters import write_judgements, write_kto, write_trl
    from engine.feedback.pairs import preference_pairs, unpaired_examples

    conversational = True if args.conversational else None
    if args.format == "trl":
        pairs = preference_pairs(records, ties=args.ties)
        return len(pairs), write_trl(pairs, args.out, conversational=conversational)
    if args.format == "kto":
        examples = unpaired_examples(records)
        return len(examples), write_kto(examples, args.out, conversational=conversational)
    return len(records), write_judgements(records, args.out)


def _write_raw(engine: Engine, selection: Selection, target: Path) -> tuple[int, Path]:
    """Every judgement row, superseded and undone ones too, with its texts: the audit trail."""
    from engine.feedback.atomic import atomic_path

    feedback = engine.reads.feedback
    batch_ids: list[int | None] = [feedback.find_batch(ref) for ref in selection.batches] or [None]  # None: every batch
    rows = [row for batch_id in batch_ids for row in feedback.judgements(batch_id=batch_id)
            if not selection.names or row.annotator in selection.names]
    if target.suffix not in (".jsonl", ".json", ".ndjson"):
        raise UserInputError(f"{target}: the raw history is written as JSONL; expected a .jsonl file")
    with atomic_path(target) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.model_dump(mode="json"), ensure_ascii=False) + "\n")
    return len(rows), target


# --- rlhf arena ----------------------------------------------------------------------


def add_arena_command(commands: Any, common: argparse.ArgumentParser) -> None:
    arena = commands.add_parser(
        "arena", parents=[common], help="blind comparisons between checkpoints, and their leaderboard",
        description="Without an action: the leaderboard (Bradley-Terry, 95 percent intervals) of the judged arena "
                    "batches. `rlhf arena new A B ...` samples the checkpoints on held-out prompts and has "
                    "a judge (or people: `rlhf rank`) compare them blind, in pairs.",
    )
    arena.add_argument("--batch", "-b", action="append", default=[], help="only this batch (repeatable)")
    arena.add_argument("--annotators", choices=("all", "people", "judges", "imported"), default="all",
                       help="whose comparisons count: everyone's, people's, judges' (judge:NAME) or imported ones")
    arena.add_argument("--json", action="store_true", help="print JSON")
    actions = arena.add_subparsers(dest="arena_command", metavar="ACTION")
    p = actions.add_parser("new", parents=[common], help="sample checkpoints on held-out prompts and compare them")
    p.add_argument("checkpoints", nargs="+", help="two or more models: folders, stage outputs, hub ids")
    p.add_argument("--prompts", default=None,
                   help="held-out prompts: a file, a hub dataset, or builtin:demo-prompts for the demo's models "
                        "(required unless every checkpoint is a built-in model)")
    p.add_argument("--max-prompts", type=int, default=50, help="use at most this many prompts (the first ones)")
    p.add_argument("--judge", help="`demo` or module:function; without one, people rank it (`rlhf rank`)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer, in tokens")
    p.add_argument("--json", action="store_true", help="print JSON")


async def cmd_arena(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.jobs import arena_spec

    if getattr(args, "arena_command", None) == "new":
        spec = arena_spec(args.checkpoints, prompts=args.prompts, max_prompts=args.max_prompts, judge=args.judge,
                          temperature=args.temperature, max_new_tokens=args.max_new_tokens, base_dir=Path.cwd())
        run = await engine.submit(spec)
        if not args.json:
            out.print(Text(printable(f"run {run.id}: {len(args.checkpoints)} checkpoints answer "
                                     f"{args.max_prompts} prompts, compared in pairs")))
        finished = await headless.follow(engine, run, json_mode=args.json, show_logs=False, console=out)
        if finished.status != "succeeded":
            out.print(Text(printable(f"arena run failed: {finished.error} (rlhf logs {run.id})")))
            return EXIT_RUN_FAILED
        if args.judge is None:
            return EXIT_OK
        batches = await asyncio.to_thread(engine.reads.list_sample_batches, run_id=run.id)
        args.batch = args.batch or [str(b.id) for b in batches]
    return await _show_leaderboard(engine, args, out)


async def _show_leaderboard(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.feedback.leaderboard import games_from_judgements, leaderboard
    from engine.feedback.stored.selection import Selection

    records = await engine.judgements(Selection(batches=tuple(args.batch), annotators=args.annotators))

    def work() -> list[Any]:
        games = games_from_judgements(records)
        return leaderboard(games) if games else []

    ratings = await asyncio.to_thread(work)
    if args.json:
        headless.emit_json([{
            "rank": r.rank, "player": r.player, "rating": r.rating, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "games": r.games, "wins": r.wins, "ties": r.ties, "losses": r.losses, "win_rate": r.win_rate,
            "elo": r.elo,
        } for r in ratings])
        return EXIT_OK
    if not ratings:
        out.print("no comparisons between different checkpoints yet: `rlhf arena new A B --prompts FILE --judge JUDGE`")
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    for column in ("#", "CHECKPOINT", "RATING", "95% CI", "GAMES", "W/T/L", "WIN RATE"):
        table.add_column(column)
    for r in ratings:
        interval = f"{r.ci_low:.0f} to {r.ci_high:.0f}" if r.ci_low is not None and r.ci_high is not None else "-"
        table.add_row(str(r.rank), Text(printable(r.player)), f"{r.rating:.0f}", interval, str(r.games),
                      f"{r.wins}/{r.ties}/{r.losses}", f"{r.win_rate:.0%}")
    out.print(table)
    return EXIT_OK


# --- rlhf score ------------------------------------------------------------------


def add_score_command(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "score", parents=[common],
        help="score a batch's responses with a reward model, and see how far it agrees with people",
        description="Score every response of a sample batch with a reward model (as an engine job; the scores "
                    "go to the store), then print the mean score and the share of the people's (and judges') "
                    "pairwise preferences on the batch that the reward model orders the same way.",
    )
    p.add_argument("checkpoint", help="the reward model: a reward stage's final folder, another folder or a hub id")
    p.add_argument("--batch", "-b", help="sample batch id or name (default: the newest)")
    p.add_argument("--batch-size", type=int, default=32, help="responses scored at once")
    p.add_argument("--json", action="store_true", help="print one JSON object")


async def cmd_score(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.jobs import score_spec

    batch_id = await asyncio.to_thread(_batch_to_score, engine, args.batch)
    run = await engine.submit(score_spec(args.checkpoint, batch_id, batch_size=args.batch_size))
    finished: RunFinished | None = None
    if args.json:
        async for update in engine.follow(run.id, logs=False):
            if isinstance(update, RunFinished):
                finished = update
    else:
        out.print(Text(printable(f"run {run.id}: {args.checkpoint} scores batch {batch_id}")))
        finished = await headless.follow(engine, run, json_mode=False, show_logs=False, console=out)
    if finished is None or finished.status != "succeeded":
        error = finished.error if finished else "no outcome"
        if args.json:
            headless.emit_json({"run_id": run.id, "status": finished.status if finished else None, "error": error})
        else:
            out.print(Text(printable(f"scoring failed: {error} (rlhf logs {run.id})")))
        return EXIT_RUN_FAILED
    # The stage records whose scores these are: the model's folder, or hub:ID.
    (stage,) = await asyncio.to_thread(engine.reads.list_stages, run_id=run.id)
    summary = await engine.batch_scores(batch_id, scorer=stage.config["scorer"])
    if args.json:
        headless.emit_json({"run_id": run.id, "status": finished.status, **summary.to_json()})
    else:
        _print_scores(summary, out)
    return EXIT_OK


def _batch_to_score(engine: Engine, ref: str | None) -> int:
    """The named batch, else the newest one."""
    if ref is not None:
        return engine.reads.feedback.find_batch(ref)
    batches = engine.reads.list_sample_batches()
    if not batches:
        raise UserInputError("no sample batches yet: a `sample` stage makes one, `rlhf prefs import` another")
    return batches[-1].id


def _print_scores(summary: BatchScores, out: Console) -> None:
    mean = f"{summary.mean:.4g}" if summary.mean is not None else "-"
    out.print(Text(printable(f"batch {summary.batch_id}: {summary.scored} of {summary.responses} responses scored "
                             f"by {summary.scorer}; mean score {mean}")))
    for who, total, names in (
        ("people", summary.people, [n for n in summary.by_annotator if is_person(n)]),
        ("judges", summary.judges, [n for n in summary.by_annotator if n.startswith("judge:")]),
    ):
        if not total.pairs:
            hint = f" (rank it: rlhf rank --batch {summary.batch_id})" if who == "people" else ""
            out.print(Text(f"agreement with {who}: no judgements by {who} on this batch{hint}"))
            continue
        each = ", ".join(f"{name} {_share(summary.by_annotator[name])}" for name in names)
        out.print(Text(printable(f"agreement with {who}: {_share(total)} ({each})")))


def _share(found: Agreement) -> str:
    return f"{found.share:.0%} of {found.pairs} pairs" if found.share is not None else "no pairs"
