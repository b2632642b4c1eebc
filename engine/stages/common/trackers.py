"""Experiment trackers: where a stage's metrics go besides the store.

A stage's `report_to = ["tensorboard", "trackio", "wandb"]` names them. There
is one tap: `StageContext.flush` hands every batch of metric rows the store has
just taken to `Trackers.write`, so a tracker gets the same keys, steps and
values as the store (NaN included, stored and sent as inf), for every kind,
PPO's own loop included; no library's own `report_to` is used.

One class per tracker behind the `Tracker` protocol, each importing its package
only when it is named (the packages are the optional `trackers` extra; the spec
checks they are installed, engine/spec/fields.py `ReportTo`). Every tracker
works offline:

- tensorboard: event files in the stage's folder, `STAGE_DIR/tensorboard/`
  (written with TensorBoard's own event writer, no torch needed); scalars are
  float32, as TensorBoard stores them.
- trackio: its local store (trackio's default folder, or $TRACKIO_DIR).
- wandb: offline files under `STAGE_DIR/wandb/` unless you set WANDB_MODE
  (then as you set it); `wandb sync` uploads them later.

Names: project `rlhf-console` (W&B: $WANDB_PROJECT when set), group = the run's
name, tracker run = `RUN/STAGE`, so a run's stages sit together.

Torch-free: `rlhf metrics export` (engine/runtime/metrics_export.py) writes
event files with `TensorBoardTracker` too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.errors import StageFailed
from engine.spec.fields import TRACKER_PACKAGES

DEFAULT_PROJECT = "rlhf-console"
#: where in a stage's folder the trackers that write files put them
TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    """One experiment tracker, fed metrics one step at a time."""

    name: str
    #: where its data goes, said in the stage's log when it starts
    where: str

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _package(name: str) -> Any:
    """The tracker's package, or a StageFailed that says how to install it (the spec checks this
    first; this is for a package removed between `rlhf run` and the stage's start)."""
    package = TRACKER_PACKAGES[name]
    if importlib.util.find_spec(package) is None:
        raise StageFailed(f"report_to names {name}, but the {package} package is not installed here: "
                          f"pip install {package} (or pip install 'rlhf-console[trackers]'), then rlhf resume")
    return importlib.import_module(package)


class TensorBoardTracker:
    """Event files that TensorBoard (and its EventAccumulator) reads: one scalar per key and step."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, *, restart_step: int | None = None) -> None:
        _package("tensorboard")
        # TensorBoard's own writer and protos: what torch's SummaryWriter uses underneath, without torch.
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = Event, Summary
        log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(log_dir))
        self.where = f"event files in {log_dir} (tensorboard --logdir {log_dir})"
        if restart_step is not None:
            # The store drops a re-run's steps from here on (engine/runtime/worker.py); a session START at
            # that step makes TensorBoard's reader drop them from the earlier attempt's event file too.
            self._writer.add_event(Event(wall_time=time.time(), step=restart_step,
                                         session_log=SessionLog(status=SessionLog.START)))

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        values = [self._summary.Value(tag=key, simple_value=value) for key, value in metrics.items()]
        self._writer.add_event(self._event(wall_time=wall_time, step=step, summary=self._summary(value=values)))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TrackioTracker:
    """A trackio run in trackio's local store (`trackio show` opens its dashboard)."""

    name = "trackio"

    def __init__(self, *, run_name: str, group: str, config: Mapping[str, Any]) -> None:
        trackio = _package("trackio")
        # Its own CPU/GPU sampling off: the tracker shows what the store holds, nothing else.
        self._run = trackio.init(project=DEFAULT_PROJECT, name=run_name, group=group, config=dict(config),
                                 auto_log_cpu=False, auto_log_gpu=False)
        store = getattr(importlib.import_module("trackio.utils"), "TRACKIO_DIR", None) or "trackio's local store"
        self.where = f"project {DEFAULT_PROJECT}, run {run_name}, in {store} (trackio show --project {DEFAULT_PROJECT})"

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        self._run.log(dict(metrics), step=step)

    def flush(self) -> None:
        pass  # trackio writes from its own thread; finish() waits for it

    def close(self) -> None:
        self._run.finish()


class WandbTracker:
    """A W&B run: offline files in the stage's folder unless WANDB_MODE says otherwise."""

    name = "wandb"

    def __init__(self, folder: Path, *, run_name: str, group: str, job_type: str,
                 config: Mapping[str, Any]) -> None:
        wandb = _package("wandb")
        mode = os.environ.get("WANDB_MODE") or "offline"  # nothing leaves the machine unless asked
        project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        folder.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project, name=run_name, group=group, job_type=job_type, config=dict(config),
            dir=str(folder), mode=mode,
            # W&B's console capture would wrap the stage's stdout, which the engine already stores.
            settings=wandb.Settings(console="off"),
        )
        self.where = (f"project {project}, run {run_name}, mode {mode}, files in {self._run.dir}"
                      + (" (upload: wandb sync)" if mode == "offline" else ""))

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        self._run.log(dict(metrics), step=step)

    def flush(self) -> None:
        pass  # W&B's own process writes as it receives

    def close(self) -> None:
        self._run.finish()


class Trackers:
    """The trackers of one stage, fed the metric rows the store has just taken.

    A tracker that fails is said in the stage's log and dropped: the store has
    every metric anyway (`rlhf metrics export` writes them out later), and a
    tracker's trouble is no reason to stop training."""

    def __init__(self, trackers: Sequence[Tracker], *, say: Callable[[str], None]) -> None:
        self._trackers = list(trackers)
        self._say = say

    def __bool__(self) -> bool:
        return bool(self._trackers)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows as the store takes them (key, step, value, wall_time), in the order they were logged."""
        groups = by_step(rows)

        def write(tracker: Tracker) -> None:
            for step, metrics, wall_time in groups:
                tracker.write(step, metrics, wall_time)
            tracker.flush()

        self._each(write, "writing")

    def close(self) -> None:
        self._each(lambda t: t.close(), "closing")
        self._trackers = []

    def _each(self, call: Callable[[Tracker], None], doing: str) -> None:
        for tracker in list(self._trackers):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001  a tracker's failure must not stop the training
                self._trackers.remove(tracker)
                self._say(f"{tracker.name} failed while {doing} ({type(exc).__name__}: {exc}); it gets no more "
                          "metrics from this stage (the store has them all: rlhf metrics export)")


def by_step(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, dict[str, float], float]]:
    """(step, {key: value}, wall_time) for each run of rows logged together (one step, one wall
    time), in order. A key seen again in a run starts a new one, so that no value is merged away."""
    groups: list[tuple[int, dict[str, float], float]] = []
    for row in rows:
        step, wall_time = int(row["step"]), float(row["wall_time"])
        if not groups or groups[-1][0] != step or groups[-1][2] != wall_time or row["key"] in groups[-1][1]:
            groups.append((step, {}, wall_time))
        groups[-1][1][row["key"]] = float(row["value"])
    return groups


def start_trackers(
    names: Sequence[str], *, stage_dir: Path, run_name: str, stage_name: str, kind: str,
    config: Mapping[str, Any], restart_step: int | None, say: Callable[[str], None],
) -> Trackers:
    """Start the named trackers for a stage; each says where its data goes. A tracker whose
    package is missing is a StageFailed naming it; one that starts is closed again if a later
    one fails, so nothing is left half open."""
    label = f"{run_name}/{stage_name}"
    factories: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: TensorBoardTracker(stage_dir / TENSORBOARD_DIR, restart_step=restart_step),
        "trackio": lambda: TrackioTracker(run_name=label, group=run_name, config=config),
        "wandb": lambda: WandbTracker(stage_dir, run_name=label, group=run_name, job_type=kind, config=config),
    }
    started: list[Tracker] = []
    try:
        for name in names:
            tracker = factories[name]()
            started.append(tracker)
            say(f"{name}: {tracker.where}")
    except BaseException:
        for tracker in started:
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001  the first failure is the one to report
                print(f"closing {tracker.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
    return Trackers(started, say=say)
