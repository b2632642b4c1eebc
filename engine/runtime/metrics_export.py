"""Writing a run's stored metrics out for other tools: `rlhf metrics export`.

    series = await engine.metrics("tiny")
    result = export_metrics(series, run_name="tiny", fmt="csv", out=None)
    print(result.message)

- csv: one row per stored point, `run,stage,step,key,value,wall_time` (long,
  or "tidy", form). Stages log different keys at different steps (train loss
  every few steps, eval now and then), so a wide table would be mostly empty
  cells; the long one loses nothing, and one call makes it wide:
  `pd.read_csv(f).pivot_table(index=["stage", "step"], columns="key", values="value")`.
  A diverged value is written `inf` (the store keeps NaN as inf), which
  pandas and spreadsheets read as infinity.
- tensorboard: event files, one folder per stage (`OUT/STAGE/`), written with
  the same writer as a stage's `report_to = ["tensorboard"]`
  (engine/stages/common/trackers.py), so `tensorboard --logdir OUT` shows the
  stages as runs. Needs the tensorboard package, not torch.

Nothing is half-written: the output goes to a temporary name beside `out`
and is renamed into place. Torch-free (the console calls it in its own process).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.errors import UserInputError

if TYPE_CHECKING:
    from engine.runtime.api import Series

ExportFormat = Literal["csv", "tensorboard"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "tensorboard")
CSV_COLUMNS = ("run", "stage", "step", "key", "value", "wall_time")


@dataclass(frozen=True)
class MetricsExport:
    out: Path
    fmt: ExportFormat
    points: int
    stages: tuple[str, ...]

    @property
    def message(self) -> str:
        """What a person reads after the export."""
        what = f"{self.points} metric points of {len(self.stages)} stage(s) ({', '.join(self.stages)})"
        if self.fmt == "tensorboard":
            return f"wrote {what} as TensorBoard event files to {self.out} (tensorboard --logdir {self.out})"
        return f"wrote {what} to {self.out}"


def default_out(run_name: str, fmt: ExportFormat) -> Path:
    """Where an export goes when --out is not given: the current folder, named after the run."""
    return Path.cwd() / (f"{run_name}-metrics.csv" if fmt == "csv" else f"{run_name}-tensorboard")


def export_metrics(series: Sequence[Series], *, run_name: str, fmt: ExportFormat,
                   out: str | os.PathLike[str] | None = None) -> MetricsExport:
    """Write every point of `series` (a run's, unsampled: `Engine.metrics(run)`) as `fmt` to `out`,
    a new file (csv) or a new or empty folder (tensorboard). Raises UserInputError for what a
    person must change: an unknown format, an `out` that is taken or cannot be written, no points, no
    tensorboard."""
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; expected one of: {', '.join(EXPORT_FORMATS)}")
    target = Path(out).expanduser().resolve() if out is not None else default_out(run_name, fmt)
    points = sum(len(s.points) for s in series)
    if points == 0:
        raise UserInputError(f"run '{run_name}' has no stored metrics yet; nothing to export")
    _check_target(target, fmt)
    stages = tuple(dict.fromkeys(s.stage for s in series))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            _write_csv(series, stages, run_name, target)
        else:
            _write_tensorboard(series, stages, target)
    except OSError as exc:  # a parent that is a file, no permission, a full disk: the writers removed their part
        raise UserInputError(f"{target}: cannot write the export there ({exc.strerror or exc})") from None
    return MetricsExport(out=target, fmt=fmt, points=points, stages=stages)


def _check_target(target: Path, fmt: ExportFormat) -> None:
    if fmt == "csv":
        if target.is_dir():
            raise UserInputError(f"{target}: is a folder; --out needs a new .csv file")
        if target.exists():
            raise UserInputError(f"{target}: exists; choose a new file for the export (or remove it)")
        return
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserInputError(f"{target}: exists and is not an empty folder; choose a new folder for the export")
    if importlib.util.find_spec("tensorboard") is None:
        raise UserInputError("--format tensorboard needs the tensorboard package: pip install tensorboard "
                             "(or pip install 'rlhf-console[trackers]'); --format csv needs nothing")


def _write_csv(series: Sequence[Series], stages: tuple[str, ...], run_name: str, target: Path) -> None:
    # Ordered as people read it: each stage in turn (`stages`: the order the run's series come in), then
    # step, then key.
    order = {stage: i for i, stage in enumerate(stages)}
    rows = sorted(
        ((s.stage, int(p.step), s.key, p.value, p.wall_time) for s in series for p in s.points),
        key=lambda row: (order[row[0]], row[1], row[2]),
    )
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(CSV_COLUMNS)
            for stage, step, key, value, wall_time in rows:
                writer.writerow((run_name, stage, step, key, repr(float(value)), repr(float(wall_time))))
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _write_tensorboard(series: Sequence[Series], stages: tuple[str, ...], target: Path) -> None:
    from engine.stages.common.trackers import TensorBoardTracker, by_step  # tensorboard, not torch

    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        for stage in stages:
            rows = sorted(
                ({"step": int(p.step), "key": s.key, "value": p.value, "wall_time": p.wall_time}
                 for s in series if s.stage == stage for p in s.points),
                key=lambda row: (row["step"], row["key"]),
            )
            writer = TensorBoardTracker(partial / stage)
            for step, metrics, wall_time in by_step(rows):
                writer.write(step, metrics, wall_time)
            writer.close()
        if target.exists():
            target.rmdir()  # empty: checked above
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


__all__ = ["EXPORT_FORMATS", "ExportFormat", "MetricsExport", "default_out", "export_metrics"]
