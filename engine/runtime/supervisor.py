"""The run process: executes one run's stages in order, each in a child process.

Started detached by the engine (`python -m engine.runtime.supervisor --run ID`). For
each stage not yet done it waits for a device slot, starts the stage worker
(through `accelerate launch` when it asks for several processes), copies the
worker's output into the run's log, and records the outcome. A heartbeat
thread lets readers on other hosts tell a live run from a dead one.

Cancel is SIGTERM to this process (or the store's cancel flag): it is passed
on to the whole stage process tree, the stage saves a checkpoint and stops;
after a grace period anything left is killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import StageFailed
from engine.runtime.devices import SlotLease, devices_for, try_acquire
from engine.runtime.launcher import LaunchSettings, child_env, find_resume_checkpoint, worker_command
from engine.runtime.liveness import (
    HEARTBEAT_SECONDS,
    HOST,
    process_tree,
    signal_tree,
    stage_process_alive,
    supervisor_alive,
)
from engine.runtime.log_capture import LogCapture
from engine.stages.registry import load_stage_plugins, stage_kind
from store import RunStatus, StageRead, StageStatus, Workspace, open_workspace, utcnow

CANCEL_GRACE_SECONDS = float(os.environ.get("RLHF_CANCEL_GRACE", "60"))
#: how often the run process reads a running stage's step, to tell a stalled one
STALL_CHECK_SECONDS = 2.0
WAIT_POLL_SECONDS = 0.5

_STAGE_TO_RUN = {
    StageStatus.SUCCEEDED: RunStatus.SUCCEEDED,
    StageStatus.FAILED: RunStatus.FAILED,
    StageStatus.CANCELLED: RunStatus.CANCELLED,
    StageStatus.CRASHED: RunStatus.CRASHED,
}


class Supervisor:
    def __init__(self, workspace: Workspace, run_id: int) -> None:
        self.ws = workspace
        self.store = workspace.store
        self.run_id = run_id
        self.cancel_requested_at: float | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._stop_heartbeat = threading.Event()

    # --- lifecycle ----------------------------------------------------------

    def execute(self) -> RunStatus:
        run = self.store.get_run(self.run_id)
        if run.status != RunStatus.QUEUED:
            return run.status  # another supervisor claimed it, or it was cancelled meanwhile
        if run.cancel_requested:  # cancelled while this process was starting
            if self.store.set_run_status_if(self.run_id, expected=(RunStatus.QUEUED,), status=RunStatus.CANCELLED,
                                            finished_at=utcnow()):
                self.store.add_event(run_id=self.run_id, kind="RunCancelled")
            return RunStatus.CANCELLED
        self.store.update_run(self.run_id, pid=os.getpid(), host=HOST, heartbeat_at=utcnow())
        # Room for telling a full disk, should a stage fill it (store/space_reserve.py).
        self.ws.keep_space_reserve()
        self._install_signal_handlers()
        heartbeat = threading.Thread(target=self._beat, daemon=True)
        heartbeat.start()
        try:
            status, error = self._run_stages()
        except Exception as exc:  # noqa: BLE001  an engine bug: record it, never hang as "running"
            status, error = RunStatus.FAILED, f"engine error: {exc}\n{traceback.format_exc()}"
        finally:
            self._stop_heartbeat.set()
        self.store.set_run_status_if(
            self.run_id,
            expected=(RunStatus.QUEUED, RunStatus.RUNNING),
            status=status,
            error=error,
            finished_at=utcnow(),
        )
        self.store.add_event(
            run_id=self.run_id, kind=f"Run{status.value.capitalize()}", data={"error": error}
        )
        return status

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_SECONDS):
            try:
                self.store.heartbeat(self.run_id)
                if self.cancel_requested_at is None and self.store.get_run(self.run_id).cancel_requested:
                    self._begin_cancel()
            except Exception:  # noqa: BLE001  a busy database must not kill the heartbeat thread
                pass

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._begin_cancel())
        signal.signal(signal.SIGINT, lambda *_: self._begin_cancel())
        # No terminal to hang up (new session), but be explicit: SIGHUP never stops a run.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _begin_cancel(self) -> None:
        if self.cancel_requested_at is not None:
            return
        self.cancel_requested_at = time.monotonic()
        child = self.child
        if child is not None and child.poll() is None:
            signal_tree(process_tree(child.pid), signal.SIGTERM)

    @property
    def cancelling(self) -> bool:
        return self.cancel_requested_at is not None

    # --- stages -------------------------------------------------------------

    def _run_stages(self) -> tuple[RunStatus, str | None]:
        run = self.store.get_run(self.run_id)
        stages = self.store.list_stages(run_id=self.run_id)
        outputs = {s.name: s.output_path for s in stages if s.status == StageStatus.SUCCEEDED}
        self.store.add_event(run_id=self.run_id, kind="RunStarted", data={"pid": os.getpid(), "host": HOST})
        for stage in stages:
            if stage.status == StageStatus.SUCCEEDED:
                continue
            spec = run.spec["stages"][stage.name]
            if self.cancelling:
                self._finish_stage(stage, StageStatus.CANCELLED, "cancelled before it started")
                return RunStatus.CANCELLED, None
            lease = self._wait_for_devices(stage, spec)
            if lease is None:
                self._finish_stage(stage, StageStatus.CANCELLED, "cancelled while waiting for a device")
                return RunStatus.CANCELLED, None
            try:
                status, error = self._run_stage(stage, spec, lease)
            finally:
                lease.release()
            if status != StageStatus.SUCCEEDED:
                message = None if status == StageStatus.CANCELLED else f"stage '{stage.name}': {error}"
                return _STAGE_TO_RUN[status], message
            outputs[stage.name] = self.store.get_stage(stage_id=stage.id).output_path
        return RunStatus.SUCCEEDED, None

    def _wait_for_devices(self, stage: StageRead, spec: dict) -> SlotLease | None:
        registered = stage_kind(spec.get("kind", ""))
        if registered is not None and not registered.spec.needs_device:
            return SlotLease(devices=[])  # e.g. ranking: people or a judge, never a GPU's slot
        kind, count = devices_for(spec.get("device", "auto"), spec.get("processes", 1))
        announced = False
        while not self.cancelling:
            if not self._older_run_waiting(kind):
                lease = try_acquire(self.ws.locks_dir, kind, count)
                if lease is not None:
                    return lease
            if not announced:
                announced = True
                self.store.update_stage(stage.id, status=StageStatus.WAITING, device=kind)
                self.store.add_event(
                    run_id=self.run_id, stage_id=stage.id, kind="StageWaiting",
                    data={"device": kind, "slots": count},
                )
            time.sleep(WAIT_POLL_SECONDS)
        return None

    def _older_run_waiting(self, kind: str) -> bool:
        """First come, first served: an older live run that waits for the same
        kind of device, or has not started yet, goes first."""
        older = {s.run_id for s in self.store.waiting_stages()
                 if s.run_id < self.run_id and (s.device or "").startswith(kind)}
        for run in self.store.list_runs(statuses=(RunStatus.QUEUED,)):
            if run.id < self.run_id and _first_device_kind(run.spec) == kind:
                older.add(run.id)
        for run_id in older:
            other = self.store.get_run(run_id)
            if other.status.is_active and other.pid is not None and supervisor_alive(other.pid):
                return True
        return False

    def _wait_for_earlier_attempt(self, stage: StageRead) -> None:
        """A resume right after a kill -9 of the run process can find the stage's previous worker
        still alive: it noticed within a second and is saving its checkpoint. Starting a second one
        beside it would have two processes writing the same checkpoints; so wait for it to finish
        (the cancel grace), then end it, its process tree only, known by workspace and stage."""
        if not stage.pid or not stage_process_alive(stage.pid, workspace_root=self.ws.root, stage_id=stage.id):
            return
        self._stage_log(stage.id, f"waiting for the previous attempt's process (pid {stage.pid}) to finish saving")
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while stage_process_alive(stage.pid, workspace_root=self.ws.root, stage_id=stage.id):
            if time.monotonic() > deadline:
                self._stage_log(stage.id, f"the previous attempt's process (pid {stage.pid}) did not end within "
                                f"{CANCEL_GRACE_SECONDS:.0f} s: killed", level="warning")
                signal_tree(process_tree(stage.pid), signal.SIGKILL)
                break
            time.sleep(0.2)

    def _resumed_weights_only(self) -> bool:
        """Whether the latest `rlhf resume` of this run asked for the weights only (engine/runtime/api.py)."""
        resumes = [e for e in self.store.events_since(run_id=self.run_id) if e.kind == "RunResumed"]
        return bool(resumes and (resumes[-1].data or {}).get("weights_only"))

    def _stage_log(self, stage_id: int, message: str, *, level: str = "info") -> None:
        """A line in the stage's log from the run process (as the worker's StageContext.log writes them)."""
        self.store.add_logs([{"run_id": self.run_id, "stage_id": stage_id, "stream": "log", "level": level,
                              "message": message, "time": utcnow()}])

    def _run_stage(self, stage: StageRead, spec: dict, lease: SlotLease) -> tuple[StageStatus, str | None]:
        stage_dir = self.ws.stage_dir(self.run_id, stage.name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        self._wait_for_earlier_attempt(stage)
        weights_only = self._resumed_weights_only()
        try:
            resume_from = find_resume_checkpoint(
                stage_dir / "checkpoints", weights_only=weights_only, skipped=lambda folder, why: self._stage_log(
                    stage.id, f"resume: skipped {folder.name}, {why}; trying an earlier checkpoint",
                    level="warning"))
        except StageFailed as exc:  # only weights without their optimizer state are left
            self._finish_stage(stage, StageStatus.FAILED, str(exc))
            return StageStatus.FAILED, str(exc)
        if resume_from is not None and weights_only:
            self._stage_log(stage.id, f"resume: weights of {resume_from.name}, as asked (--weights-only); "
                            "where its optimizer or scheduler state is missing they start fresh", level="warning")
        self.store.update_stage(
            stage.id, status=StageStatus.RUNNING, device=lease.names or None, started_at=utcnow(),
            finished_at=None, error=None, traceback=None, attempt=stage.attempt + 1,
        )
        # The first stage to start makes the run "running" (a resumed run keeps its start time).
        self.store.set_run_status_if(
            self.run_id, expected=(RunStatus.QUEUED,), status=RunStatus.RUNNING,
            **({} if self.store.get_run(self.run_id).started_at else {"started_at": utcnow()}),
        )
        self.store.add_event(
            run_id=self.run_id, stage_id=stage.id, kind="StageStarted",
            data={"device": lease.names, "resume_from": str(resume_from) if resume_from else None},
        )

        env = {"RLHF_SUPERVISOR_PID": str(os.getpid())}
        if lease.devices and lease.devices[0].kind == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d.index) for d in lease.devices)
        try:
            command = worker_command(
                workspace_root=self.ws.root, stage_id=stage.id, launch=LaunchSettings.from_spec(spec),
                device_kind=lease.devices[0].kind if lease.devices else "cpu", resume_from=resume_from,
            )
        except StageFailed as exc:  # launch settings this machine cannot run (FSDP on a CPU, ...)
            self._finish_stage(stage, StageStatus.FAILED, str(exc))
            return StageStatus.FAILED, str(exc)
        capture = LogCapture(
            store=self.store, run_id=self.run_id, stage_id=stage.id, log_file=stage_dir / "stage.log"
        )
        self.child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=stage_dir, env=child_env(env), close_fds=True,
        )
        self.store.update_stage(stage.id, pid=self.child.pid)
        # Never None: both were opened as pipes above.
        assert self.child.stdout is not None and self.child.stderr is not None
        capture.attach(self.child.stdout, "stdout")
        capture.attach(self.child.stderr, "stderr")
        if self.cancelling:  # cancel arrived between the check above and the start
            signal_tree(process_tree(self.child.pid), signal.SIGTERM)
        # A stage without a device (rank, waiting for people) may rightly sit still for hours.
        registered = stage_kind(spec.get("kind", ""))
        watched = registered is None or registered.spec.needs_device
        watch = StallWatch(stage.id, minutes=float(spec.get("stall_minutes", 30)) if watched else 0.0,
                           fail=spec.get("on_stall") == "fail")
        returncode = self._wait_for_child(self.child, watch)
        capture.close()
        self.child = None
        if watch.failed is not None:
            self._finish_stage(stage, StageStatus.FAILED, watch.failed)
            return StageStatus.FAILED, watch.failed
        return self._record_outcome(stage, returncode)

    def _wait_for_child(self, child: subprocess.Popen[bytes], watch: StallWatch | None = None) -> int:
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if (
                    self.cancel_requested_at is not None
                    and time.monotonic() - self.cancel_requested_at > CANCEL_GRACE_SECONDS
                ):
                    signal_tree(process_tree(child.pid), signal.SIGKILL)
                if watch is not None:
                    self._watch_progress(child, watch)

    def _watch_progress(self, child: subprocess.Popen[bytes], watch: StallWatch) -> None:
        """Mark the stage stalled when its step stops advancing (its error reads
        `stalled: ...` while it runs on), clear the mark when it moves again,
        and with on_stall = "fail" stop it (a stopped process too: SIGKILL)."""
        now = time.monotonic()
        if watch.minutes <= 0 or now - watch.checked_at < STALL_CHECK_SECONDS:
            return
        watch.checked_at = now
        step = self.store.get_stage(stage_id=watch.stage_id).step
        if step != watch.step:
            watch.step, watch.moved_at = step, now
            if watch.stalled:
                watch.stalled = False
                self.store.update_stage(watch.stage_id, error=None)
                self._stage_log(watch.stage_id, f"step {step}: progressing again")
            return
        idle = now - watch.moved_at
        if watch.stalled or idle < watch.minutes * 60:
            return
        watch.stalled = True
        why = (f"stalled: no step past {step} for {idle / 60:.1f} min (stall_minutes = {watch.minutes:g}); "
               "a stopped or hung process, a dead collective, or a slow disk or network")
        self.store.update_stage(watch.stage_id, error=why)
        self.store.add_event(run_id=self.run_id, stage_id=watch.stage_id, kind="StageStalled", data={"step": step})
        self._stage_log(watch.stage_id, why, level="warning")
        if watch.fail:
            watch.failed = why + "; stopped (on_stall = fail), resumable from its last checkpoint"
            signal_tree(process_tree(child.pid), signal.SIGKILL)

    def _record_outcome(self, stage: StageRead, returncode: int) -> tuple[StageStatus, str | None]:
        """The worker records success, failure and cancellation itself; any
        other ending (killed, out of memory, segfault) is a crash."""
        row = self.store.get_stage(stage_id=stage.id)
        if returncode == 0 and row.status == StageStatus.SUCCEEDED:
            status, error = StageStatus.SUCCEEDED, None
        elif row.status in (StageStatus.FAILED, StageStatus.CANCELLED):
            status, error = row.status, row.error
        elif self.cancelling:
            status, error = StageStatus.CANCELLED, "stopped on request before it could save"
        else:
            status, error = StageStatus.CRASHED, _describe_exit(returncode)
        self._finish_stage(stage, status, error)
        return status, error

    def _finish_stage(self, stage: StageRead, status: StageStatus, error: str | None) -> None:
        self.store.update_stage(stage.id, status=status, error=error, finished_at=utcnow())
        self.store.add_event(
            run_id=self.run_id, stage_id=stage.id, kind=f"Stage{status.value.capitalize()}",
            data={"error": error} if error else {},
        )


@dataclass
class StallWatch:
    """What the run process remembers of a running stage's progress."""

    stage_id: int
    minutes: float
    fail: bool
    step: int | None = None
    moved_at: float = field(default_factory=time.monotonic)
    checked_at: float = 0.0
    stalled: bool = False
    failed: str | None = None  # why the stage was stopped, with on_stall = "fail"


def _first_device_kind(spec: dict[str, Any]) -> str:
    """The kind of device a run's first stage asks for."""
    first: dict[str, Any] = next(iter(spec.get("stages", {}).values()), {})
    return devices_for(first.get("device", "auto"), first.get("processes", 1))[0]


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"stage process was killed by {name}"
    return f"stage process exited with code {returncode} without recording an outcome"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.runtime.supervisor")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--run", required=True, type=int)
    args = parser.parse_args(argv)
    load_stage_plugins()  # a plugin's kind may say it needs no device
    workspace = open_workspace(args.workspace, create=False)
    status = Supervisor(workspace, args.run).execute()
    return 0 if status == RunStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
