"""`StageContext`: everything a stage needs from the engine, and nothing more.

A stage's `run(ctx)` reads its validated spec and folders from here and
reports through it: metrics, progress, checkpoints, the resolved config.
Writes are batched (at most one transaction per `FLUSH_SECONDS`) so logging
every step costs nothing measurable. Under several processes only the main
process writes; the others' calls are no-ops.

A store another process holds locked (a long write transaction: a backup, a
person's script) is waited out, never a reason to lose the steps since the
last checkpoint: metrics and progress stay buffered and go at a later flush,
and other writes try again until `STORE_PATIENCE_SECONDS`, each wait said
on stderr (the run's log file).

It is also the one tap for experiment trackers (`report_to`, trackers.py):
each batch of metrics the store takes goes on to the stage's trackers as it
was written, so they show what the store holds, for every kind.

Torch-free on purpose: tests drive it without a model.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from engine.errors import StageFailed
from engine.runtime.checkpoints import CHECKPOINT_NAME
from engine.spec.fields import StageSpec
from engine.stages.common.trackers import Trackers, start_trackers
from store import Store, is_busy, utcnow

T = TypeVar("T")

FLUSH_SECONDS = 1.0
CANCEL_POLL_SECONDS = 1.0
#: how long a write waits out a locked store (in tries of the store's busy timeout) before the stage fails
STORE_PATIENCE_SECONDS = 600.0


@dataclass(frozen=True)
class Source:
    """A resolved reference: where to load a model, tokenizer or dataset from."""

    kind: Literal["builtin", "path", "hub"]
    value: str  # builtin name, absolute path, or hub id


def checkpoint_name(source: Source) -> str:
    """How a sample records the model that wrote it: a folder's absolute
    path, else the canonical reference (`builtin:llama-4m`, `hub:org/name`).
    (engine/runtime/jobs.py reads it back without importing this module.)"""
    return source.value if source.kind == "path" else f"{source.kind}:{source.value}"


class StageContext:
    def __init__(
        self,
        *,
        store: Store,
        run_id: int,
        stage_id: int,
        stage_name: str,
        spec: StageSpec,
        output_dir: Path,
        cache_dir: Path,
        stage_outputs: Mapping[str, str],
        resume_from: Path | None = None,
        is_main_process: bool = True,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.stage_id = stage_id
        self.stage_name = stage_name
        self.spec = spec
        self.output_dir = output_dir
        self.cache_dir = cache_dir
        self.resume_from = resume_from
        self.is_main_process = is_main_process
        self._stage_outputs = dict(stage_outputs)
        self._pending_metrics: list[dict[str, Any]] = []
        self._pending_progress: tuple[int, int | None] | None = None
        self._last_flush = time.monotonic()
        self._last_cancel_poll = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._locked_since: float | None = None  # when the current run of locked-store writes began
        self._trackers: Trackers | None = None  # by open_trackers (the worker, at the stage's start)

    # --- folders ------------------------------------------------------------

    @property
    def checkpoints_dir(self) -> Path:
        """Resumable checkpoints (`checkpoint-STEP/`), rotated by the stage."""
        return self.output_dir / "checkpoints"

    @property
    def final_dir(self) -> Path:
        """The stage's output: a Hugging Face folder that plain transformers loads."""
        return self.output_dir / "final"

    # --- references ---------------------------------------------------------

    def resolve(self, ref: str) -> Source:
        """Turn a canonical reference (`stage:`, `builtin:`, `path:`, `hub:`) into a Source."""
        scheme, _, value = ref.partition(":")
        if scheme == "stage":
            try:
                return Source("path", self._stage_outputs[value])
            except KeyError:
                raise KeyError(f"stage {value!r} has no output yet") from None
        if scheme in ("builtin", "path", "hub"):
            return Source(scheme, value)  # type: ignore[arg-type]
        raise ValueError(f"not a canonical reference: {ref!r}")

    def resolve_optional(self, ref: str | None) -> Source | None:
        """`resolve` for a field the spec may leave out (None stays None)."""
        return None if ref is None else self.resolve(ref)

    # --- reporting ----------------------------------------------------------

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record metric values at a step; keys are slash-namespaced (`train/loss`)."""
        if not self.is_main_process:
            return
        now = time.time()
        with self._lock:
            for key, value in metrics.items():
                if value is None:
                    continue
                value = float(value)
                if value != value:  # NaN is worth seeing, but SQLite stores it as NULL
                    value = float("inf")
                self._pending_metrics.append(
                    {
                        "run_id": self.run_id,
                        "stage_id": self.stage_id,
                        "key": key,
                        "step": int(step),
                        "value": value,
                        "wall_time": now,
                    }
                )
        self._maybe_flush()

    def set_progress(self, step: int, total: int | None = None) -> None:
        if not self.is_main_process:
            return
        with self._lock:
            self._pending_progress = (int(step), total)
        self._maybe_flush()

    def set_resolved_config(self, config: Mapping[str, Any], *, device: str | None = None) -> None:
        """The full configuration the stage really used (library defaults included)."""
        if not self.is_main_process:
            return
        fields: dict[str, Any] = {"config": _jsonable(dict(config))}
        if device is not None:
            fields["device"] = device
        self._patiently(lambda: self.store.update_stage(self.stage_id, **fields))

    def checkpoint_saved(self, step: int, path: Path, *, is_final: bool = False) -> None:
        if not self.is_main_process:
            return
        self.flush()  # metrics up to the checkpoint land before it does
        self._patiently(lambda: self.store.add_checkpoint(
            run_id=self.run_id, stage_id=self.stage_id, step=step, path=str(path), is_final=is_final
        ))

    def checkpoints_removed(self, paths: list[Path]) -> None:
        """The stage rotated old checkpoint folders away: forget them."""
        if not self.is_main_process or not paths:
            return
        wanted = {str(p) for p in paths}
        ids = [c.id for c in self.store.list_checkpoints(stage_id=self.stage_id) if c.path in wanted]
        self._patiently(lambda: self.store.remove_checkpoints(ids))

    def add_prompts(self, prompts: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store prompts (get-or-create by text); their ids, in order. Every
        process gets the ids (it is a read as much as a write)."""
        return self._patiently(lambda: self.store.add_prompts(prompts))

    def create_sample_batch(self, *, name: str, settings: Mapping[str, Any], sources: Sequence[str]) -> int | None:
        """A batch of responses generated with one set of sampling settings."""
        if not self.is_main_process:
            return None
        return self._patiently(lambda: self.store.create_sample_batch(
            name=name, settings=settings, sources=sources, run_id=self.run_id, stage_id=self.stage_id
        )).id

    def log_samples(
        self,
        samples: Sequence[Mapping[str, Any]],
        *,
        step: int | None = None,
        checkpoint: str | None = None,
        batch_id: int | None = None,
    ) -> None:
        """Store responses: each has prompt_id, response and optionally meta
        (token counts, whether it ended, seconds, a score)."""
        if not self.is_main_process or not samples:
            return
        rows = [
            {"run_id": self.run_id, "stage_id": self.stage_id, "step": step, "checkpoint": checkpoint,
             "batch_id": batch_id, **sample}
            for sample in samples
        ]
        self._patiently(lambda: self.store.add_samples(rows))

    def log(self, message: str, *, level: str = "info") -> None:
        """A line for the run's log, from the engine's side of the stage."""
        if self.is_main_process:
            line = {"run_id": self.run_id, "stage_id": self.stage_id, "stream": "log",
                    "level": level, "message": message, "time": utcnow()}
            self._patiently(lambda: self.store.add_logs([line]))

    def flush(self) -> None:
        """Write the buffered metrics and progress. A locked store keeps them
        buffered for a later flush (they are not lost, and training goes on),
        until STORE_PATIENCE_SECONDS of locks in a row fail the stage."""
        with self._lock:
            metrics, self._pending_metrics = self._pending_metrics, []
            progress, self._pending_progress = self._pending_progress, None
            self._last_flush = time.monotonic()
        written: list[dict[str, Any]] = []
        try:
            if metrics:
                self.store.add_metrics(metrics)
                written, metrics = metrics, []
            if progress is not None:
                step, total = progress
                fields: dict[str, Any] = {"step": step}
                if total is not None:
                    fields["total"] = total
                self.store.update_stage(self.stage_id, **fields)
            self._locked_since = None
        except Exception as exc:
            if not is_busy(exc):
                raise
            with self._lock:  # back in front of what came meanwhile, in order
                self._pending_metrics[:0] = metrics
                if self._pending_progress is None:
                    self._pending_progress = progress
            self._note_locked("metrics kept to write later")
        if written and self._trackers:
            # What the store just took, row for row: the trackers cannot show anything it lacks.
            self._trackers.write(written)

    # --- trackers -----------------------------------------------------------

    def open_trackers(self) -> None:
        """Start the trackers the spec's `report_to` names (main process only; once). The worker calls
        it before the stage runs: a missing package fails the stage there, in one line that says what
        to install. A context no one opened (a test's) sends its metrics to the store only."""
        if self._trackers is not None or not self.is_main_process:
            return
        names = list(self.spec.report_to)
        self._trackers = Trackers([], say=self.log)  # set first: once a start below failed, nothing tries again
        if not names:
            return
        self._trackers = start_trackers(
            names, stage_dir=self.output_dir, run_name=self.store.get_run(self.run_id).name,
            stage_name=self.stage_name, kind=self.spec.kind,
            config=self.spec.model_dump(mode="json", by_alias=True),
            restart_step=self._restart_step(), say=self.log,
        )

    def _restart_step(self) -> int | None:
        """The first step whose metrics this attempt writes anew: the worker drops the store's
        points from there (engine/runtime/worker.py), and TensorBoard's reader is told the same."""
        if self.resume_from is None:
            return 0  # a first attempt, or one after a kill before the first whole checkpoint
        resumed_at = CHECKPOINT_NAME.match(self.resume_from.name)  # as the worker reads it
        return int(resumed_at.group(1)) + 1 if resumed_at else None

    def close(self) -> None:
        """The stage is over: write what is buffered, and close its trackers (their files complete)."""
        self.flush()
        if self._trackers is not None:
            self._trackers.close()

    def _patiently(self, write: Callable[[], T]) -> T:
        """`write()`, tried again while another process holds the store locked."""
        while True:
            try:
                result = write()
            except Exception as exc:
                if not is_busy(exc):
                    raise
                self._note_locked("trying again")
                time.sleep(1.0)  # each try already waited the store's busy timeout
                continue
            self._locked_since = None
            return result

    def _note_locked(self, doing: str) -> None:
        now = time.monotonic()
        if self._locked_since is None:
            self._locked_since = now
        waited = now - self._locked_since
        # stderr goes to the run's log file: the store itself cannot take the line now.
        print(f"the store is locked by another process ({waited:.0f} s so far): {doing}", file=sys.stderr, flush=True)
        if waited >= STORE_PATIENCE_SECONDS:
            raise StageFailed(f"the store stayed locked by another process for {waited:.0f} s; "
                              "find what holds its write lock (a long transaction on rlhf.db), then resume")

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS or len(self._pending_metrics) > 2000:
            self.flush()

    # --- stopping -----------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def wait_for_stop(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a stop request made in this process
        (`request_stop` or a signal; the store's flag is not polled here): True once one came."""
        return self._stop.wait(timeout)

    def should_stop(self) -> bool:
        """True once a cancel was asked for (SIGTERM or the store's flag).

        Stages check it between steps, save a checkpoint, and raise
        `StageCancelled`. The store is polled at most once a second."""
        if self._stop.is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
            self._last_cancel_poll = now
            if self.store.get_run(self.run_id).cancel_requested:
                self._stop.set()
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM (cancel) and SIGINT become a stop request, not an exception mid-step."""

        def on_signal(signum: int, _frame: object) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", "1"))


def _jsonable(value: Any) -> Any:
    """Library configs hold enums, paths and dtypes: keep what JSON can show."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
