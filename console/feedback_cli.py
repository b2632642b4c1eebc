"""`rlhf rank`, `rlhf prefs` and `rlhf arena`: human feedback from the command line.

`rlhf rank` opens the console's rank screen on a batch (people), or with
`--auto JUDGE` has a judge rank it as an engine job (recorded as `judge:NAME`);
`--list` shows the batches and how far their ranking is.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import Engine, RunFinished
from engine.jobs import rank_spec
from store import RankBatch

from . import headless
from .literal import printable

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
    feedback = engine.store.feedback
    if args.list:
        batches = await asyncio.to_thread(feedback.rank_batches)
        if args.json:
            headless.emit_json([_batch_json(b) for b in batches])
        else:
            _print_batches(batches, out)
        return EXIT_OK
    batch_id = await asyncio.to_thread(feedback.find_batch, args.batch)
    run = await engine.submit(rank_spec(batch_id, judge=args.auto, judgements_per_item=args.judgements_per_item))
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
