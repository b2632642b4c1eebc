"""A stage process: `python -m engine.runtime.worker --stage-id N`.

The only place that imports a stage module (and so torch and friends). It
builds the stage's context, runs the stage, and records how it ended:
succeeded (with its output folder), cancelled, or failed (with the
traceback). Anything that kills it before it can record that is a crash,
which the supervisor records instead. Under `accelerate launch` every rank
runs this; only rank 0 reports metrics and success.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
import traceback
from pathlib import Path

from engine.errors import StageCancelled, StageFailed
from engine.runtime.checkpoints import CHECKPOINT_NAME
from engine.runtime.disk_space import no_space_message
from engine.runtime.liveness import supervisor_alive
from engine.runtime.orphan_output import OrphanSafeStream
from engine.spec.fields import STORED
from engine.stages.common.context import StageContext
from engine.stages.registry import load_stage_plugins, stage_kind
from store import StageStatus, open_workspace, utcnow

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3


def _watch_supervisor(ctx: StageContext) -> None:
    """If our run process dies (kill -9), stop at the next step and save,
    instead of training on as an orphan that nobody records."""
    pid = os.environ.get("RLHF_SUPERVISOR_PID")
    if not pid:
        return

    def watch() -> None:
        while not ctx.wait_for_stop(1.0):
            if not supervisor_alive(int(pid)):
                ctx.request_stop()
                return

    threading.Thread(target=watch, daemon=True, name="supervisor-watch").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.runtime.worker")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--stage-id", required=True, type=int)
    parser.add_argument("--resume-from", type=Path, default=None)
    args = parser.parse_args(argv)
    # Every rank imports the plugins: for the kinds they register, and for
    # what they install in this process (tests/stages/ppo_cancel_plugin.py).
    load_stage_plugins()

    is_main = int(os.environ.get("RANK", "0")) == 0
    workspace = open_workspace(args.workspace, create=False)
    store = workspace.store
    stage = store.get_stage(stage_id=args.stage_id)
    run = store.get_run(stage.run_id)
    kind = stage_kind(stage.kind)
    if kind is None:
        raise StageFailed(f"unknown stage kind {stage.kind!r} (is its plugin in RLHF_STAGE_PLUGINS?)")
    spec = kind.spec.model_validate(run.spec["stages"][stage.name], context=STORED)
    outputs = {
        s.name: s.output_path
        for s in store.list_stages(run_id=run.id)
        if s.status == StageStatus.SUCCEEDED and s.output_path
    }
    ctx = StageContext(
        store=store,
        run_id=run.id,
        stage_id=stage.id,
        stage_name=stage.name,
        spec=spec,
        output_dir=workspace.stage_dir(run.id, stage.name),
        cache_dir=workspace.cache_dir,
        stage_outputs=outputs,
        resume_from=args.resume_from,
        is_main_process=is_main,
    )
    ctx.install_signal_handlers()
    # Output that outlives the run process (kill -9) goes to the stage's log file, not a broken pipe.
    sys.stdout = OrphanSafeStream(sys.stdout, ctx.output_dir / "stage.log")
    sys.stderr = OrphanSafeStream(sys.stderr, ctx.output_dir / "stage.log")
    _watch_supervisor(ctx)
    if args.resume_from is not None:
        ctx.log(f"resuming from {args.resume_from}")
    resumed_at = CHECKPOINT_NAME.match(args.resume_from.name) if args.resume_from is not None else None
    if is_main and (resumed_at or args.resume_from is None):
        # The steps after the checkpoint run again: their new metrics replace the old, never sit beside them.
        # Without a checkpoint (killed before the first one was whole) that is every step from the start,
        # the eval a stage runs before its first step (step 0) included; on a first attempt nothing is there.
        after = int(resumed_at.group(1)) if resumed_at else -1
        dropped = store.drop_metrics_after(stage_id=stage.id, step=after)
        if dropped:
            since = f"after step {after}" if resumed_at else "by an earlier attempt (no whole checkpoint to start from)"
            ctx.log(f"{dropped} metric points logged {since} replaced by the re-run")

    def record(status: StageStatus, error: str | None, tb: str | None = None) -> None:
        ctx.close()  # its metrics, and its trackers' files, complete before the outcome is recorded
        # A failing rank records its error even when it is not rank 0.
        if is_main or status == StageStatus.FAILED:
            store.update_stage(stage.id, status=status, error=error, traceback=tb)

    try:
        ctx.open_trackers()  # report_to: a missing package fails here, before the model loads
        module = importlib.import_module(kind.module)
        module.run(ctx)
    except StageCancelled as exc:
        supervisor = os.environ.get("RLHF_SUPERVISOR_PID")
        if supervisor and not supervisor_alive(int(supervisor)):
            # Stopped because the run process died: that is a crash, kept resumable.
            record(StageStatus.CRASHED, "the run process died; the stage saved a checkpoint and stopped")
        else:
            record(StageStatus.CANCELLED, str(exc) or "cancelled on request")
        # Only rank 0 reports the cancel by its exit code: a non-zero exit of
        # another rank would make accelerate's launcher print a failure.
        return EXIT_CANCELLED if is_main else EXIT_OK
    except Exception as exc:  # noqa: BLE001  any stage bug is recorded with its traceback
        full = no_space_message(exc, ctx.output_dir)
        if full is not None:
            # The store is on that disk too: the room set aside for this lets it record why.
            workspace.release_space_reserve()
            print(f"stage failed: {full}", file=sys.stderr, flush=True)
            record(StageStatus.FAILED, full, traceback.format_exc())
        elif isinstance(exc, StageFailed):
            record(StageStatus.FAILED, str(exc))
        else:
            record(StageStatus.FAILED, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            traceback.print_exc()  # also into the stage log
        return EXIT_FAILED
    ctx.close()
    if is_main:
        store.update_stage(
            stage.id, status=StageStatus.SUCCEEDED, output_path=str(ctx.final_dir),
            finished_at=utcnow(),
        )
    return EXIT_OK


def leave_process_group() -> None:
    """Tear torch.distributed down before the interpreter exits. Left to
    shutdown, a rank can abort after its stage succeeded ("terminate called
    without an active exception" from the process group's threads, SIGABRT),
    and accelerate's launcher then reports the whole stage as crashed."""
    dist = sys.modules.get("torch.distributed")  # only if the stage used torch at all
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    with contextlib.suppress(Exception):  # the outcome is recorded already; exiting matters more
        dist.destroy_process_group()


if __name__ == "__main__":
    code = main()
    leave_process_group()
    sys.exit(code)
