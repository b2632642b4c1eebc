"""`rlhf`: the command line. Headless mode for people at a shell and for scripts.

`rlhf validate SPEC` checks a spec as `rlhf run` would and prints its plan;
`--set STAGE.KEY=VALUE` (run, validate) changes a spec's key for one command;
`rlhf completion bash|zsh` prints a completion script; `rlhf --version`.

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
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from engine import Engine, EngineError, RunFinished
from store import StoreError, is_read_only, why_not_writable

from . import headless
from .completion import SHELLS, completes_files, completes_folders
from .feedback_cli import (
    add_arena_command,
    add_prefs_command,
    add_rank_command,
    add_score_command,
    annotator_name,
    cmd_arena,
    cmd_prefs,
    cmd_rank,
    cmd_score,
    start_active_order,
    wants_rank_console,
)
from .literal import printable

if TYPE_CHECKING:
    from store import RunRead

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one worth showing and the help
    does not already say it (argparse's ArgumentDefaultsHelpFormatter would also print
    `(default: None)` and `(default: False)` after every flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        # Identity, not equality: a default of 0 is worth showing, and 0 == False.
        shown = not (default is None or default is False or default is argparse.SUPPRESS or default in ("", []))
        takes_default = bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        if shown and takes_default and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with our help formatter; subcommands' parsers are made of this class too
    (add_subparsers uses the parent's class), the feedback commands' included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


class _ShowVersion(argparse.Action):
    """`--version`: read from installed metadata when asked, not each time the parser is built."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from .version import version_text

        sys.stdout.write(version_text() + "\n")  # stdout, as argparse's own version action (exit() writes stderr)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    # --workspace is accepted before or after the command name.
    common = _Parser(add_help=False)
    completes_folders(common.add_argument(
        "--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
        help="workspace folder (default: $RLHF_WORKSPACE, else ./rlhf-workspace)",
    ))
    parser = _Parser(
        prog="rlhf", parents=[common],
        description="Train language models through the InstructGPT recipe from one terminal.",
    )
    parser.add_argument("--version", action=_ShowVersion,
                        help="print the versions of rlhf-console, torch, transformers, trl, peft and accelerate")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_, description=help_)

    p = command("run", "validate a pipeline spec and run it")
    completes_files(p.add_argument("spec", type=Path, help="pipeline spec (TOML)"))
    p.add_argument("--name", help="run name (default: the spec's name)")
    _set_option(p)
    _follow_options(p)

    p = command("validate", "check a pipeline spec as `rlhf run` would and print its plan; runs and records nothing")
    completes_files(p.add_argument("spec", type=Path, help="pipeline spec (TOML)"))
    _set_option(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = command("ls", "list runs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=int, default=None, help="show at most this many")

    p = command("status", "show a run's stages, progress and key metrics")
    p.add_argument("run", help="run id or name")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("round", "another round of RLHF on a finished run: sample its newest policy, rank, reward, PPO, arena")
    p.add_argument("run", help="the run to continue from (the demo, or a run with a policy stage)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--people", action="store_true",
                     help="people rank the new answers (rlhf rank); default: whoever ranked the run's own")
    who.add_argument("--judge", metavar="NAME", default=None,
                     help="this judge ranks the new answers and the arena: demo or module:function; "
                          "default: the run's own rank stage's judge")
    _follow_options(p)

    p = command("report", "a run's key numbers side by side: loss, judge score, reward accuracy, win rates, arena")
    p.add_argument("run", help="run id or name")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("logs", "print a run's log")
    p.add_argument("run", help="run id or name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--stage", help="only this stage's lines")

    p = command("metrics", "print a run's metric series; `rlhf metrics export RUN` writes them to a file")
    p.add_argument("run", nargs="+", metavar="RUN",
                   help="run id or name; `export RUN` writes every stored point (--format, --out)")
    p.add_argument("--stage", help="only this stage")
    p.add_argument("--key", help="only this key, e.g. eval/loss")
    p.add_argument("--max-points", type=int, default=None, help="downsample each series to this many points")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--format", choices=("csv", "tensorboard"), default=None,
                   help="export: csv (one row per point: run, stage, step, key, value, wall_time; the default) "
                        "or tensorboard (event files, a folder per stage; needs the tensorboard package)")
    completes_files(p.add_argument("--out", type=Path, default=None,
                                   help="export: the new file or folder (default: RUN-metrics.csv or "
                                        "RUN-tensorboard in the current folder)"))

    p = command("cancel", "stop a run (its stage saves a checkpoint first)")
    p.add_argument("run", help="run id or name")
    p.add_argument("--no-wait", action="store_true", help="return without waiting for it to stop")

    p = command("resume", "continue a failed, cancelled or crashed run from its last checkpoint")
    p.add_argument("run", help="run id or name")
    p.add_argument("--weights-only", action="store_true",
                   help="accept a checkpoint whose optimizer or scheduler state is lost: continue from its "
                        "weights and step with a fresh optimizer (the curves then differ from an unbroken run)")
    _follow_options(p)

    p = command("generate", "answer a prompt with one or two checkpoints (runs as an engine job)")
    p.add_argument("checkpoint", nargs="+",
                   help="model folder(s), stage output, hub id; the last argument is the prompt")
    p.add_argument("--k", type=int, default=1, help="responses per checkpoint")
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling: keep the likeliest tokens up to "
                   "this much probability (1 = all)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest answer, in tokens")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("export", "write a checkpoint as a plain Hugging Face folder (safetensors, tokenizer)")
    completes_folders(p.add_argument("checkpoint", type=Path,
                                     help="a model or LoRA adapter folder, or RUN:STAGE (that stage's final model)"))
    completes_folders(p.add_argument("--out", type=Path, required=True, help="new folder to write"))
    p.add_argument("--merge-lora", action="store_true", help="merge a LoRA adapter into its base model")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own code (only for models you trust)")

    p = command("push", "upload a checkpoint folder to the Hugging Face hub, with a model card written from the store")
    completes_folders(p.add_argument("checkpoint", type=Path,
                                     help="a model or LoRA adapter folder (a stage's final/, an export), "
                                          "or RUN:STAGE (that stage's final model)"))
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the hub repo (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", default=None,
                   help="push to this branch (created from main if missing); default: main")
    p.add_argument("--commit-message", metavar="TEXT", default=None,
                   help="the hub commit's message (default: Upload FOLDER with rlhf-console)")

    p = command("init", "write a commented example pipeline spec")
    completes_files(p.add_argument("path", nargs="?", type=Path, default=Path("pipeline.toml"),
                                   help="where to write it"))
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = command("demo", "run the built-in demo pipeline and open the console on it")
    p.add_argument("--headless", action="store_true",
                   help="no console: print progress here (also without a terminal, or with --json/--detach)")
    p.add_argument("--quick", action="store_true",
                   help="fewer steps in every stage: about a third of the time, smaller gains")
    _follow_options(p)

    command("tui", "open the console: every run live; start, compare, cancel and resume runs")
    add_rank_command(commands, common)
    add_prefs_command(commands, common)
    add_arena_command(commands, common)
    add_score_command(commands, common)

    p = command("completion", "print a shell completion script for rlhf")
    p.add_argument("shell", choices=SHELLS,
                   help="the shell: bash (e.g. rlhf completion bash > ~/.local/share/bash-completion/completions/rlhf)"
                        " or zsh (rlhf completion zsh > a folder on $fpath, as _rlhf)")
    return parser


def _set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="STAGE.KEY=VALUE",
                   help="change one key of a stage's table before the spec is validated, e.g. --set sft.max_steps=50 "
                        "or --set sft.lora.r=16; the value is read as TOML (a word that is not TOML is a string); "
                        "repeatable")


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
    # the spec models (pydantic) only for the commands that read a spec
    from engine.spec.overrides import load_spec_with_overrides

    spec = load_spec_with_overrides(args.spec, args.overrides)  # raises SpecError before anything is written
    run = await engine.submit(spec, name=args.name)
    return await _attached(engine, run, args, out)


async def cmd_demo(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.demo.pipeline import demo_spec

    run = await engine.submit(demo_spec(quick=args.quick))
    code = await _attached(engine, run, args, out)
    if not args.detach and code != EXIT_INTERRUPTED:
        # The demo ends with its report: each stage's numbers side by side.
        report = await engine.report(run.id)
        if args.json:
            headless.emit_json({"type": "Report", **report.to_json()})
        else:
            headless.print_report(report, out)
    return code


async def cmd_resume(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    run = await engine.resume(args.run, weights_only=args.weights_only)
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


async def cmd_round(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    # Neither flag: the round keeps the run's own judge (or people), never a default of ours.
    run = await engine.next_round(args.run, judge=None if args.people else args.judge or ...)
    code = await _attached(engine, run, args, out)
    if not args.detach and not args.json and code != EXIT_INTERRUPTED:
        headless.print_report(await engine.report(run.id), out)
    return code


async def cmd_report(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    report = await engine.report(args.run)
    if args.json:
        headless.emit_json(report.to_json())
    else:
        headless.print_report(report, out)
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
    while lines := engine.reads.logs_since(run_id=detail.run.id, after_id=after, limit=5000):
        for line in lines:
            show(detail.stage_name(line.stage_id), line.message)
        after = lines[-1].id
    return EXIT_OK


async def cmd_metrics(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    if len(args.run) == 2 and args.run[0] == "export":
        return await _metrics_export(engine, args.run[1], args, out)
    if len(args.run) != 1:
        raise _BadInput("usage: rlhf metrics RUN, or rlhf metrics export RUN [--format csv|tensorboard] [--out PATH]")
    if args.format is not None or args.out is not None:
        raise _BadInput(f"--format and --out go with export: rlhf metrics export {args.run[0]} --format ...")
    series = await engine.metrics(args.run[0], stage=args.stage, key=args.key, max_points=args.max_points)
    if args.json:
        headless.emit_json(headless.series_json(series))
    else:
        headless.print_series(series, out)
    return EXIT_OK


async def _metrics_export(engine: Engine, run_ref: str, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.metrics_export import export_metrics

    if args.max_points is not None:
        raise _BadInput("--max-points does not go with export: it writes every stored point")
    run = await engine.get_run(run_ref)
    series = await engine.metrics(run.id, stage=args.stage, key=args.key)
    if not series and (args.stage or args.key):  # else export_metrics says the run has none at all
        only = " and ".join(f"{name} '{value}'" for name, value in (("stage", args.stage), ("key", args.key)) if value)
        raise _BadInput(f"run '{run.name}' has no stored metrics for {only}; nothing to export")
    result = await asyncio.to_thread(export_metrics, series, run_name=run.name, fmt=args.format or "csv",
                                     out=args.out)
    if args.json:
        headless.emit_json({"out": str(result.out), "format": result.fmt, "points": result.points,
                            "stages": list(result.stages)})
    else:
        out.print(Text(printable(result.message)), soft_wrap=True)
    return EXIT_OK


async def cmd_cancel(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    run = await engine.cancel(args.run, wait=not args.no_wait)
    stopping = " (stop requested)" if run.status.is_active else ""
    out.print(Text(f"run {run.id} '{run.name}': {run.status.value}{stopping}"))
    return EXIT_OK


async def cmd_generate(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.jobs import generate_spec, generated_answers

    if len(args.checkpoint) < 2:
        raise _BadInput("usage: rlhf generate CHECKPOINT [CHECKPOINT] \"prompt\"")
    *checkpoints, prompt = args.checkpoint
    spec = generate_spec(
        checkpoints, [prompt], k=args.k, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed, base_dir=Path.cwd(),
    )
    run = await engine.submit(spec)
    finished = None
    async for update in engine.follow(run.id, logs=False, metrics=False):
        if isinstance(update, RunFinished):
            finished = update
    if finished is None or finished.status != "succeeded":
        error = finished.error if finished else "no outcome"
        out.print(Text(printable(f"generation failed: {error} (rlhf logs {run.id})")))
        return EXIT_RUN_FAILED
    answers = await generated_answers(engine, run.id)
    if args.json:
        headless.emit_json([{"checkpoint": a.checkpoint, "prompt": a.prompt, "response": a.response,
                             "tokens": a.tokens, "finished": a.finished} for a in answers])
        return EXIT_OK
    for answer in answers:
        ended = "" if answer.finished else "  (cut at max-new-tokens)"
        out.print(Text(printable(f"--- {answer.checkpoint}{ended}"), style="bold"))
        out.print(Text(printable(answer.response)), soft_wrap=True)
    return EXIT_OK


async def cmd_export(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.export_job import run_export

    result = await asyncio.to_thread(
        run_export, args.checkpoint, args.out, merge_lora=args.merge_lora,
        trust_remote_code=args.trust_remote_code, store=engine.reads,
    )
    out.print(Text(printable(result.message)))
    return EXIT_OK


async def cmd_push(engine: Engine, args: argparse.Namespace, out: Console) -> int:
    from engine.runtime.push_job import run_push

    result = await asyncio.to_thread(
        run_push, args.checkpoint, args.repo, store=engine.reads, private=args.private,
        revision=args.revision, commit_message=args.commit_message,
    )
    out.print(Text(printable(result.message)), soft_wrap=True)
    return EXIT_OK


def _wants_console(args: argparse.Namespace) -> bool:
    if args.command == "tui":
        return True
    if wants_rank_console(args):
        return True
    return (args.command == "demo" and not (args.headless or args.json or args.detach)
            and sys.stdin.isatty() and sys.stdout.isatty())


def cmd_tui(engine: Engine, args: argparse.Namespace) -> int:
    """The console (`rlhf tui`, `rlhf demo`): quitting it leaves every run going."""
    from .app import RlhfApp  # Textual only for the console, never for headless commands

    open_run = None
    open_rank = None
    if args.command == "rank":
        batch = engine.reads.feedback.find_batch(args.batch) if args.batch else None
        open_rank = (batch, annotator_name(args))
        asyncio.run(start_active_order(engine, args))  # --order active: the job that keeps the order
    if args.command == "demo":
        from engine.demo.pipeline import demo_spec

        # In the console the person ranks (a few, then J hands the rest to the judge).
        open_run = asyncio.run(engine.submit(demo_spec(people_rank=True, quick=args.quick))).id
    RlhfApp(engine, open_run=open_run, open_rank=open_rank, rank_when_asked=args.command == "demo").run()
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, out: Console) -> int:
    """Everything `rlhf run` checks before it submits (the spec, its references, its data files),
    then the plan; a bad spec raises the same SpecError `rlhf run` gives. Opens no workspace."""
    from engine.runtime.plan import plan_pipeline
    from engine.spec.overrides import load_spec_with_overrides

    plan = plan_pipeline(load_spec_with_overrides(args.spec, args.overrides))
    if args.json:
        headless.emit_json(plan.to_json())
    else:
        run_command = ["rlhf", "run", str(args.spec), *(f"--set={o}" for o in args.overrides)]
        headless.print_plan(plan, out, run_command=run_command)
    return EXIT_OK


def cmd_completion(args: argparse.Namespace, out: Console) -> int:
    from .completion import completion_script

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return EXIT_OK


def cmd_init(args: argparse.Namespace, out: Console) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        raise _BadInput(f"{path}: already exists (use --force to overwrite)")
    from engine import EXAMPLE_SPEC

    path.write_text(EXAMPLE_SPEC, encoding="utf-8")
    out.print(Text(f"wrote {path}; run it with: rlhf run {path}"))
    return EXIT_OK


class _BadInput(EngineError):
    exit_code = EXIT_BAD_INPUT


COMMANDS = {
    "run": cmd_run, "demo": cmd_demo, "resume": cmd_resume, "ls": cmd_ls, "status": cmd_status,
    "logs": cmd_logs, "report": cmd_report, "round": cmd_round, "metrics": cmd_metrics, "cancel": cmd_cancel,
    "generate": cmd_generate, "export": cmd_export, "push": cmd_push, "rank": cmd_rank,
    "prefs": cmd_prefs, "arena": cmd_arena, "score": cmd_score,
}


#: commands that neither open nor create a workspace
WITHOUT_A_WORKSPACE = {"init": cmd_init, "validate": cmd_validate, "completion": cmd_completion}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        if args.command in WITHOUT_A_WORKSPACE:
            return WITHOUT_A_WORKSPACE[args.command](args, out)
        engine = Engine(getattr(args, "workspace", None))
        try:
            if _wants_console(args):
                return cmd_tui(engine, args)
            return asyncio.run(COMMANDS[args.command](engine, args, out))
        except Exception as exc:
            if not (engine.workspace.read_only and is_read_only(exc)):
                raise
            # A read-only workspace (or a full disk) still lists, shows and reports; a command that writes says so.
            why = why_not_writable(engine.workspace.db_path)
            err.print(Text(printable(f"rlhf: {engine.workspace.root}: {why}, so `rlhf {args.command}` cannot write "
                                     "there; reading commands (ls, status, logs, metrics, report) still work")),
                      soft_wrap=True)
            return EXIT_BAD_INPUT
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
