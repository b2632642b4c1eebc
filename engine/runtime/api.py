"""`Engine`: the torch-free async API that the CLI and the console share.

    engine = Engine("./rlhf-workspace")
    run = await engine.submit(load_spec("pipeline.toml"))
    async for update in engine.follow(run.id):
        ...
    await engine.cancel(run.id)
    await engine.resume(run.id)

Store calls run in a thread (`asyncio.to_thread`) so a Textual event loop
never waits on SQLite. Every read first reconciles: runs whose process is
gone are shown as crashed, never as running.

A front end reads through `engine.reads` (the store typed as the read-only
`store.reads.StoreReader`), `list_run_listings` (the runs list without the
ORM) and the reads that need the engine's feedback logic (`judgements`,
`batch_scores`), and changes things only through this class: runs
(`submit`, `cancel`, `resume`, `next_round`) and human feedback
(`engine.annotation`, engine/runtime/annotation.py).

Importing this module, or making an `Engine` on a current workspace, does not
import SQLAlchemy: the ORM-backed store is opened when something first needs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING

from engine.errors import InvalidRunState, RunNotFound
from engine.runtime.annotation import Annotation
from engine.runtime.launcher import spawn_supervisor
from engine.runtime.liveness import HOST, reconcile, run_process_gone, supervisor_alive
from engine.runtime.updates import LifecycleEvent, LogEmitted, MetricsLogged, RunFinished, StageProgress, Update
from store import NotFound, RunStatus, StageStatus, reads, utcnow
from store.reads import RunListing, StoreReader
from store.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from engine.feedback.records import Judgement
    from engine.feedback.stored.selection import Selection
    from engine.recipe.report import Report
    from engine.recipe.reward_agreement import BatchScores
    from engine.spec.pipeline import PipelineSpec
    from store import CheckpointRead, MetricSummary, RunRead, SeriesPoint, StageRead, Store

RECONCILE_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class RunDetail:
    run: RunRead
    stages: list[StageRead]
    checkpoints: list[CheckpointRead]

    def stage_name(self, stage_id: int | None) -> str | None:
        return next((s.name for s in self.stages if s.id == stage_id), None)


@dataclass(frozen=True)
class Series:
    stage: str
    key: str
    points: list[SeriesPoint]


class Engine:
    def __init__(self, workspace: str | os.PathLike[str] | Workspace | None = None) -> None:
        self.workspace = workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
        self._children: list[subprocess.Popen[bytes]] = []

    @property
    def store(self) -> Store:
        """The workspace's store (the engine's own, and its stages' helpers'): front ends use `reads`."""
        return self.workspace.store

    @property
    def reads(self) -> StoreReader:
        """The store as a front end may use it: reads only (store/reads.py)."""
        return self.workspace.store

    @cached_property
    def annotation(self) -> Annotation:
        """Human feedback: serving items, judgements, undo, comments, claims."""
        return Annotation(lambda: self.workspace.store)

    def close(self) -> None:
        self.workspace.close()

    # --- submitting and controlling -----------------------------------------

    async def submit(self, spec: PipelineSpec, *, name: str | None = None, start: bool = True) -> RunRead:
        """Record a validated pipeline as a queued run and start its process."""
        return await asyncio.to_thread(self._submit, spec, name, start)

    def _submit(self, spec: PipelineSpec, name: str | None, start: bool) -> RunRead:
        from store import NewStage

        stages = [
            NewStage(
                name=stage_name,
                kind=stage_spec.kind,
                position=position,
                parent=spec.parents.get(stage_name),
                config=stage_spec.model_dump(by_alias=True, mode="json"),
            )
            for position, (stage_name, stage_spec) in enumerate(spec.stages.items())
        ]
        run = self.store.create_run(
            name=name or spec.name,
            spec_text=spec.text,
            spec={"name": spec.name, "description": spec.description, "stages": spec.to_dict()},
            # Absolute, so it still means something from another folder; built-in specs keep their name.
            spec_path=str(Path(spec.source).resolve()) if Path(spec.source).exists() else spec.source,
            stages=stages,
        )
        if start:
            self._launch(run.id)
        return self.store.get_run(run.id)

    def _launch(self, run_id: int) -> None:
        # Mark the moment it was (re)queued: liveness gives a process this long to appear.
        self.store.update_run(run_id, heartbeat_at=utcnow(), host=HOST)
        process = spawn_supervisor(
            self.workspace.root, run_id, self.workspace.run_dir(run_id) / "supervisor.log"
        )
        self._children.append(process)
        self.store.update_run(run_id, pid=process.pid)

    async def cancel(self, run: int | str, *, wait: bool = False, timeout: float = 120.0) -> RunRead:
        """Ask a run to stop: its stage saves a checkpoint where it can, then
        the whole process tree ends and the run is recorded as cancelled."""
        run_row = await asyncio.to_thread(self._cancel, run)
        if wait:
            deadline = time.monotonic() + timeout
            while run_row.status.is_active and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                run_row = await asyncio.to_thread(self._get_run, run_row.id)
        return run_row

    def _cancel(self, ref: int | str) -> RunRead:
        run = self._get_run(ref)
        if not run.status.is_active:
            raise InvalidRunState(f"run '{run.name}' is {run.status}; only queued or running runs can be cancelled")
        self.store.update_run(run.id, cancel_requested=True)
        self.store.add_event(run_id=run.id, kind="CancelRequested")
        alive = run.pid is not None and supervisor_alive(run.pid, workspace_root=self.workspace.root, run_id=run.id)
        if alive and run.status == RunStatus.RUNNING:
            try:
                os.kill(run.pid, signal.SIGTERM)  # type: ignore[arg-type]
            except PermissionError:
                # Another account's run in a shared workspace: we may not signal it, but the cancel
                # flag set above is read by its run process on its next heartbeat, and it stops then.
                self.store.add_event(run_id=run.id, kind="CancelByFlagOnly", data={"reason": "another user's process"})
        elif alive:
            # A queued run's process may still be starting, before its SIGTERM
            # handler exists: a signal now would kill it and read as a crash.
            # It reads the flag when it claims the run and on every heartbeat.
            pass
        elif self.store.set_run_status_if(
            run.id, expected=(RunStatus.QUEUED,), status=RunStatus.CANCELLED, finished_at=utcnow()
        ):
            self.store.add_event(run_id=run.id, kind="RunCancelled")
        return self.store.get_run(run.id)

    async def resume(self, run: int | str, *, weights_only: bool = False) -> RunRead:
        """Continue a failed, cancelled or crashed run: finished stages are
        kept, the interrupted stage restarts from its newest whole checkpoint
        with its step count, optimizer and scheduler state.

        A checkpoint whose optimizer or scheduler state is lost is not whole:
        resuming from its weights with a fresh optimizer changes the run's
        curves, so it happens only with `weights_only`."""
        return await asyncio.to_thread(self._resume, run, weights_only)

    def _resume(self, ref: int | str, weights_only: bool = False) -> RunRead:
        run = self._get_run(ref)
        if run.status.is_active:
            raise InvalidRunState(f"run '{run.name}' is still {run.status}")
        if not run.status.is_resumable:
            raise InvalidRunState(f"run '{run.name}' {run.status}; there is nothing to resume")
        for stage in self.store.list_stages(run_id=run.id):
            if stage.status != StageStatus.SUCCEEDED:
                self.store.update_stage(
                    stage.id, status=StageStatus.PENDING, error=None, traceback=None,
                    finished_at=None,  # pid kept: the run process waits for that process if it still runs
                )
        if not self.store.set_run_status_if(
            run.id,
            expected=(RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CRASHED),
            status=RunStatus.QUEUED, cancel_requested=False, error=None, finished_at=None,
            pid=None, attempt=run.attempt + 1,
        ):
            raise InvalidRunState(f"run '{run.name}' changed state meanwhile; try again")
        # The run process reads this event to choose the checkpoint (engine/runtime/supervisor.py).
        self.store.add_event(run_id=run.id, kind="RunResumed",
                             data={"attempt": run.attempt + 1, "weights_only": weights_only})
        self._launch(run.id)
        return self.store.get_run(run.id)

    # --- reading ------------------------------------------------------------

    def _reap_children(self) -> None:
        for child in self._children:  # reap finished run processes we started
            child.poll()
        self._children = [c for c in self._children if c.returncode is None]

    def _reconcile(self) -> None:
        self._reap_children()
        if not self.workspace.read_only:  # a read-only workspace (or full disk) is shown as it was left
            reconcile(self.store, self.workspace.root)

    def _get_run(self, ref: int | str) -> RunRead:
        self._reconcile()
        try:
            return self.store.get_run(ref)
        except NotFound:
            raise RunNotFound(f"no run named or numbered '{ref}' in {self.workspace.root}") from None

    async def get_run(self, run: int | str) -> RunRead:
        return await asyncio.to_thread(self._get_run, run)

    async def list_runs(self, *, limit: int | None = None) -> list[RunRead]:
        def work() -> list[RunRead]:
            self._reconcile()
            return self.store.list_runs(limit=limit)

        return await asyncio.to_thread(work)

    async def list_run_listings(self) -> list[RunListing]:
        """Every run, newest first, read without the ORM (`store.reads`): the
        console's runs list. Reconciled like `list_runs`, but the ORM is opened
        only when a run must be marked crashed."""
        return await asyncio.to_thread(self._list_run_listings)

    def _list_run_listings(self) -> list[RunListing]:
        self._reap_children()
        runs = reads.list_runs(self.workspace.db_path)
        if not self.workspace.read_only and any(
                run.status.is_active and run_process_gone(run, self.workspace.root) for run in runs):
            reconcile(self.store, self.workspace.root)
            runs = reads.list_runs(self.workspace.db_path)
        return runs

    async def next_round(self, run: int | str, *, judge: str | EllipsisType | None = ...) -> RunRead:
        """Iterated RLHF: submit the next round of a finished run (engine.recipe.rounds), on the
        run's own task and settings. `judge` left out: the run's own rank stage's judge ranks the
        new answers (none there: people); None: people rank them; a name: that judge."""
        from engine.recipe.rounds import next_round_spec

        row = await self.get_run(run)
        spec = await asyncio.to_thread(next_round_spec, self.store, row.id, judge=judge)
        return await self.submit(spec)

    async def report(self, run: int | str) -> Report:
        """A run's report (engine.recipe.report.build_report): key numbers per stage, win rates, arena."""
        from engine.recipe.report import build_report

        row = await self.get_run(run)
        return await asyncio.to_thread(build_report, self.store, row.id)

    async def detail(self, run: int | str) -> RunDetail:
        def work() -> RunDetail:
            row = self._get_run(run)
            return RunDetail(
                run=row,
                stages=self.store.list_stages(run_id=row.id),
                checkpoints=self.store.list_checkpoints(run_id=row.id),
            )

        return await asyncio.to_thread(work)

    async def metrics(
        self, run: int | str, *, stage: str | None = None, key: str | None = None,
        max_points: int | None = None,
    ) -> list[Series]:
        """Metric series of a run, optionally one stage's or one key's."""

        def work() -> list[Series]:
            row = self._get_run(run)
            stage_names = {s.id: s.name for s in self.store.list_stages(run_id=row.id)}
            if stage is not None and stage not in stage_names.values():
                names = ", ".join(stage_names.values())
                raise RunNotFound(f"run '{row.name}' has no stage '{stage}' (stages: {names})")
            result = []
            for stage_id, metric_key in self.store.metric_keys(run_id=row.id):
                stage_name = stage_names.get(stage_id, "?")
                if (stage is None or stage == stage_name) and (key is None or key == metric_key):
                    points = self.store.metric_series(stage_id=stage_id, key=metric_key, max_points=max_points)
                    result.append(Series(stage=stage_name, key=metric_key, points=points))
            return result

        return await asyncio.to_thread(work)

    async def summaries(self, run: int | str) -> list[MetricSummary]:
        return await asyncio.to_thread(lambda: self.store.metric_summaries(run_id=self._get_run(run).id))

    async def judgements(self, selection: Selection) -> list[Judgement]:
        """The standing judgements a selection names, as feedback records
        (engine.feedback.stored.selection): what exports and the arena read.
        An unknown batch is a UserInputError."""
        from engine.feedback.stored.selection import selected_judgements

        return await asyncio.to_thread(selected_judgements, self.store, selection)

    async def batch_scores(self, batch_id: int, *, scorer: str) -> BatchScores:
        """One scorer's scores of a batch, and how far they agree with the batch's
        judgements (engine.recipe.reward_agreement)."""
        from engine.recipe.reward_agreement import batch_scores

        return await asyncio.to_thread(batch_scores, self.store, batch_id=batch_id, scorer=scorer)

    # --- following ----------------------------------------------------------

    async def follow(
        self,
        run: int | str,
        *,
        logs: bool = True,
        metrics: bool = True,
        poll_seconds: float = 0.5,
    ) -> AsyncIterator[Update]:
        """Everything that happens to a run, from its start, until it ends.

        Ends with a `RunFinished` update once the run reached a final status
        and everything it wrote was delivered."""
        cursor = _Cursor()
        last_reconcile = 0.0
        row = await self.get_run(run)
        while True:
            if time.monotonic() - last_reconcile > RECONCILE_EVERY_SECONDS:
                await asyncio.to_thread(self._reconcile)
                last_reconcile = time.monotonic()
            row, updates = await asyncio.to_thread(self._poll, row.id, cursor, logs, metrics)
            for update in updates:
                yield update
            if not row.status.is_active and not updates:
                yield RunFinished(run_id=row.id, status=str(row.status), error=row.error)
                return
            if not updates:
                await asyncio.sleep(poll_seconds)

    def _poll(self, run_id: int, cursor: _Cursor, logs: bool, metrics: bool) -> tuple[RunRead, list[Update]]:
        run = self.store.get_run(run_id)  # read first: whatever it says, the rows below are newer
        stages = {s.id: s for s in self.store.list_stages(run_id=run_id)}
        updates: list[Update] = []
        for event in self.store.events_since(run_id=run_id, after_id=cursor.event):
            cursor.event = event.id
            stage = stages.get(event.stage_id) if event.stage_id else None
            updates.append(
                LifecycleEvent(run_id=run_id, event=event.kind, stage=stage.name if stage else None,
                               time=event.time, data=event.data)
            )
        if metrics:
            by_step: dict[tuple[int, int], dict[str, float]] = {}
            for point in self.store.metrics_since(run_id=run_id, after_id=cursor.metric):
                cursor.metric = point.id
                by_step.setdefault((point.stage_id, point.step), {})[point.key] = point.value
            for (stage_id, step), values in by_step.items():
                updates.append(MetricsLogged(run_id=run_id, stage=stages[stage_id].name, step=step, values=values))
        if logs:
            for line in self.store.logs_since(run_id=run_id, after_id=cursor.log):
                cursor.log = line.id
                stage = stages.get(line.stage_id) if line.stage_id else None
                updates.append(
                    LogEmitted(run_id=run_id, stage=stage.name if stage else None, stream=line.stream,
                               level=line.level, message=line.message, time=line.time)
                )
        for stage in stages.values():
            state = (str(stage.status), stage.step, stage.total)
            if cursor.progress.get(stage.id) != state:
                cursor.progress[stage.id] = state
                updates.append(StageProgress(run_id=run_id, stage=stage.name, status=str(stage.status),
                                             step=stage.step, total=stage.total))
        return run, updates


@dataclass
class _Cursor:
    """How far a follower has read each stream."""

    event: int = 0
    metric: int = 0
    log: int = 0
    progress: dict[int, tuple[str, int, int | None]] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.progress = {}


__all__ = ["Engine", "RunDetail", "Series"]
