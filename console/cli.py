"""`rlhf`: the command line. Headless mode for people at a shell and for scripts.

Exit codes: 0 the command (or the run it followed) succeeded; 1 the run
failed, crashed or was cancelled; 2 bad input (a spec, a run name, a file),
with one message per problem naming the file and field; 130 interrupted.

An attached `rlhf run` cancels its run on Ctrl-C (it saves a checkpoint
first); closing the terminal or losing SSH leaves the run going, and
`--detach` returns at once. Either way `rlhf status/logs/resume` pick it up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from engine import EXAMPLE_SPEC, Engine, EngineError, RunFinished, load_spec
from store import RunRead, StoreError

from . import headless
from .literal import printable

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    # --workspace is accepted before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
        help="workspace folder (default: $RLHF_WORKSPACE, else ./rlhf-workspace)",
    )
    parser = argparse.ArgumentParser(
        prog="rlhf", parents=[common],
        description="Train language models through the InstructGPT recipe from one terminal.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_, description=help_)

    p = command("run", "validate a pipeline spec and run it")
    p.add_argument("spec", type=Path, help="pipeline spec (TOML)")
    p.add_argument("--name", help="run name (default: the spec's name)")
    _follow_options(p)

    p = command("ls", "list runs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=int, default=None, help="show at most this many")

    p = command("status", "show a run's stages, progress and key metrics")
    p.add_argument("run", help="run id or name")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("logs", "print a run's log")
    p.add_argument("run", help="run id or name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--stage", help="only this stage's lines")

    p = command("metrics", "print a run's metric series")
    p.add_argument("run", help="run id or name")
    p.add_argument("--stage", help="only this stage")
    p.add_argument("--key", help="only this key, e.g. eval/loss")
    p.add_argument("--max-points", type=int, default=None, help="downsample each series to this many points")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("cancel", "stop a run (its stage saves a checkpoint first)")
    p.add_argument("run", help="run id or name")
    p.add_argument("--no-wait", action="store_true", help="return without waiting for it to stop")

    p = command("resume", "continue a failed, cancelled or crashed run from its last checkpoint")
    p.add_argument("run", help="run id or name")
    _follow_options(p)

    p = command("init", "write a commented example pipeline spec")
    p.add_argument("path", nargs="?", type=Path, default=Path("pipeline.toml"))
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = command("demo", "run the built-in demo pipeline")
    p.add_argument("--headless", action="store_true", help="no console, print progress (the default until the console lands)")
    _follow_options(p)
    return parser


def _follow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detach", "-d", action="store_true", help="start it and return at once")
    p.add_argument("--json", action="store_true", help="print JSON lines (one update per line)")
    p.add_argument("--verbose", "-v", action="store_true", help="also print the stages' log lines")


# --- commands ------------------------------------------------------------------


async def _start_and_follow(engine: Engine, run: RunRead, args: argparse.Namespace, out: Console) -> int:
    if args.detach:
        if args.json:
            headless.emit_json(headless.run_json(run))
        else:
            out.print(Text(f"started run {run.id} '{run.name}' (rlhf status {run.id}; rlhf logs {run.id} -f)"))
        return EXIT_OK
    if not args.json:
        out.print(Text(f"run {run.id} '{run.name}': following (Ctrl-C cancels it; closing the terminal does not)"))
    finished = await headless.follow(engine, run, json_mode=args.json, show_logs=args.verbose, console=out)
    if not args.json:
        detail = await engine.detail(run.id)
        headless.print_detail(detail, await engine.summaries(run.id), out)
    return EXIT_OK if finished.status == "succeeded" else EXIT_RUN_FAILED


async def cmd_run(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    spec = load_spec(args.spec)  # raises SpecError before anything is written
    run = await engine.submit(spec, name=args.name)
    return await _attached(engine, run, args, out)


async def cmd_demo(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from .demo import demo_spec

    run = await engine.submit(demo_spec())
    return await _attached(engine, run, args, out)


async def cmd_resume(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    run = await engine.resume(args.run)
    return await _attached(engine, run, args, out)


async def _attached(engine: Engine, run: RunRead, args: argparse.Namespace, out: Console) -> int:
    try:
        return await _start_and_follow(engine, run, args, out)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C on an attached run stops the run, like any foreground command.
        print(f"\ncancelling run {run.id} (it saves a checkpoint first) ...", file=sys.stderr)
        final = await engine.cancel(run.id, wait=True)
        print(f"run {run.id} {final.status.value}; `rlhf resume {run.id}` continues it", file=sys.stderr)
        return EXIT_INTERRUPTED


async def cmd_ls(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    runs = await engine.list_runs(limit=args.limit)
    if args.json:
        headless.emit_json([headless.run_json(r) for r in runs])
    else:
        headless.print_runs(runs, out)
    return EXIT_OK


async def cmd_status(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    detail = await engine.detail(args.run)
    summaries = await engine.summaries(detail.run.id)
    if args.json:
        headless.emit_json(headless.detail_json(detail, summaries))
    else:
        headless.print_detail(detail, summaries, out)
    return EXIT_OK


async def cmd_logs(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    detail = await engine.detail(args.run)
    if args.stage is not None and args.stage not in {s.name for s in detail.stages}:
        names = ", ".join(s.name for s in detail.stages)
        raise _BadInput(f"run '{detail.run.name}' has no stage '{args.stage}' (stages: {names})")

    def show(stage: str | None, message: str) -> None:
        if args.stage is None or stage == args.stage:
            out.print(Text(printable(f"[{stage or 'run'}] {message}")), soft_wrap=True)

    if args.follow:
        async for update in engine.follow(detail.run.id, metrics=False):
            if isinstance(update, headless.LogEmitted):
                show(update.stage, update.message)
            elif isinstance(update, RunFinished):
                break
        return EXIT_OK
    after = 0
    while lines := engine.store.logs_since(run_id=detail.run.id, after_id=after, limit=5000):
        for line in lines:
            show(detail.stage_name(line.stage_id), line.message)
        after = lines[-1].id
    return EXIT_OK


async def cmd_metrics(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    series = await engine.metrics(args.run, stage=args.stage, key=args.key, max_points=args.max_points)
    if args.json:
        headless.emit_json(headless.series_json(series))
    else:
        headless.print_series(series, out)
    return EXIT_OK


async def cmd_cancel(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    run = await engine.cancel(args.run, wait=not args.no_wait)
    out.print(Text(f"run {run.id} '{run.name}': {run.status.value}" + (" (stop requested)" if run.status.is_active else "")))
    return EXIT_OK


def cmd_init(args: argparse.Namespace, out: Console) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        raise _BadInput(f"{path}: already exists (use --force to overwrite)")
    path.write_text(EXAMPLE_SPEC, encoding="utf-8")
    out.print(Text(f"wrote {path}; run it with: rlhf run {path}"))
    return EXIT_OK


class _BadInput(EngineError):
    exit_code = EXIT_BAD_INPUT


COMMANDS = {
    "run": cmd_run, "demo": cmd_demo, "resume": cmd_resume, "ls": cmd_ls, "status": cmd_status,
    "logs": cmd_logs, "metrics": cmd_metrics, "cancel": cmd_cancel,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        if args.command == "init":
            return cmd_init(args, out)
        engine = Engine(getattr(args, "workspace", None))
        try:
            return asyncio.run(COMMANDS[args.command](engine, args, out))
        finally:
            engine.close()
    except EngineError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err.print(Text(printable(f"rlhf: {line}")), soft_wrap=True)
        return exc.exit_code
    except StoreError as exc:
        err.print(Text(printable(f"rlhf: {exc}")), soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
