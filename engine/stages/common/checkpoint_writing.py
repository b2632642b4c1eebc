"""Writing resumable checkpoints so that a kill at any moment leaves only whole ones.

A checkpoint is written under `checkpoints/.staging/checkpoint-STEP`, by
every process that has files to write (under DDP, FSDP or DeepSpeed each
rank adds its RNG state or its shards), and moved into place as
`checkpoints/checkpoint-STEP` with one `os.rename` by the main process once
every process is done and the files are synced to disk. Old checkpoints
beyond `keep` are first renamed into `checkpoints/.deleting/`, then
forgotten by the store, then deleted. The names the supervisor resumes from
(`^checkpoint-(\\d+)$`, engine/runtime/checkpoints.py) therefore only ever
name whole folders, and a kill between any two steps leaves either the old
set of checkpoints or the new one, plus leftovers under `.staging/` and
`.deleting/` that `clean_leftovers` removes when the stage starts again.

`CheckpointWriter` does the disk side for every kind (the Trainer-based
stages through `write_trainer_checkpoints_atomically`, PPO directly);
`record_and_prune` keeps the store's rows in step with it, and
`reconcile_store` repairs the store after a kill fell between a rename and
its store write.

Torch-free: a stage passes its own "is main process" and barrier.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import StageFailed
from engine.runtime.checkpoints import CHECKPOINT_DONE_MARKER, CHECKPOINT_NAME, checkpoint_problem
from engine.stages.common.context import StageContext

STAGING = ".staging"
DELETING = ".deleting"
#: the staging name PPO used before this module (`.checkpoint-STEP.tmp`): cleaned up too
_LEGACY_TMP_PREFIX = ".checkpoint-"


def checkpoint_folder_name(step: int) -> str:
    return f"checkpoint-{step}"


class CheckpointWriter:
    """Stages, publishes and prunes the `checkpoint-STEP` folders of one stage.

    Every process calls `begin` and `publish` (they hold barriers); only the
    main one (`is_main`) touches the folders' names. `barrier` waits for
    every process (accelerate's `wait_for_everyone`; a no-op for one)."""

    def __init__(self, root: Path, *, keep: int | None, is_main: bool = True,
                 barrier: Callable[[], None] = lambda: None) -> None:
        self.root = root
        self.keep = keep  # None or < 1: keep every checkpoint
        self.is_main = is_main
        self.barrier = barrier

    @property
    def staging_root(self) -> Path:
        return self.root / STAGING

    def staging_folder(self, step: int) -> Path:
        return self.staging_root / checkpoint_folder_name(step)

    # --- writing ------------------------------------------------------------------

    def begin(self, step: int) -> Path:
        """An empty staging folder for checkpoint `step`, made by the main
        process before any process writes into it."""
        folder = self.staging_folder(step)
        if self.is_main:
            # The whole staging root: whatever else is there is a failed earlier save.
            shutil.rmtree(self.staging_root, ignore_errors=True)
            folder.mkdir(parents=True)
        self.barrier()
        return folder

    def publish(self, step: int) -> Path:
        """Move the staged checkpoint into place once every process wrote its
        part; the folder's final path. Fails, rather than publishing, when the
        staged folder lacks the marker the writer puts there last."""
        self.barrier()
        target = self.root / checkpoint_folder_name(step)
        if not self.is_main:
            return target
        staged = self.staging_folder(step)
        if not (staged / CHECKPOINT_DONE_MARKER).is_file():
            raise StageFailed(f"checkpoint {step} was not written where expected ({staged} has no "
                              f"{CHECKPOINT_DONE_MARKER}); nothing was published")
        _fsync_tree(staged)
        if target.exists():
            # A folder of the same step from an earlier attempt (torn, or of a timeline the resume
            # went back from): out of the way in one rename, so the name never shows a mix of both.
            self._move_to_deleting(target)
        os.rename(staged, target)
        _fsync_dir(self.root)
        _remove_if_empty(self.staging_root)
        return target

    # --- pruning ------------------------------------------------------------------

    def retire_old(self, newest: int) -> list[Path]:
        """Rename all but the `keep` newest checkpoints (by step, `newest`
        always among those kept) into `.deleting/`; their former paths.

        Folders of steps after `newest` are from before a resume went back to
        an earlier checkpoint (the run will write those steps again), so they
        go first: they never push the checkpoint just written out."""
        if not self.is_main or self.keep is None or self.keep < 1:
            return []
        folders = self.checkpoints()
        kept = [step for step in sorted(folders) if step <= newest][-self.keep:]
        retired = [folders[step] for step in sorted(folders) if step not in kept]
        for folder in retired:
            self._move_to_deleting(folder)
        if retired:
            _fsync_dir(self.root)
        return retired

    def purge(self) -> None:
        """Delete what `retire_old` and `publish` moved aside."""
        if self.is_main:
            shutil.rmtree(self.root / DELETING, ignore_errors=True)

    def clean_leftovers(self) -> list[Path]:
        """Remove what a kill left half done: staged checkpoints never
        published, retired ones not yet deleted. What was removed."""
        if not self.is_main or not self.root.is_dir():
            return []
        leftovers = [p for p in self.root.iterdir()
                     if p.name in (STAGING, DELETING)
                     or (p.name.startswith(_LEGACY_TMP_PREFIX) and p.name.endswith(".tmp"))]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        return leftovers

    def checkpoints(self) -> dict[int, Path]:
        """The published `checkpoint-STEP` folders, by step."""
        if not self.root.is_dir():
            return {}
        return {int(match.group(1)): child for child in self.root.iterdir()
                if child.is_dir() and (match := CHECKPOINT_NAME.match(child.name))}

    def _move_to_deleting(self, folder: Path) -> None:
        aside = self.root / DELETING / folder.name
        if aside.exists():
            shutil.rmtree(aside)  # an earlier one of the same name, already forgotten
        aside.parent.mkdir(exist_ok=True)
        os.rename(folder, aside)


# --- the store's side ------------------------------------------------------------------


def record_and_prune(ctx: StageContext, writer: CheckpointWriter, step: int, folder: Path) -> None:
    """After `publish`: the store learns of the new checkpoint, then old ones
    are renamed away, forgotten by the store, and only then deleted. At no
    moment does the store list a name whose folder is half deleted."""
    if not writer.is_main:
        return
    ctx.checkpoints_removed([folder])  # a row of an earlier folder of this step, if any
    ctx.checkpoint_saved(step, folder)
    ctx.checkpoints_removed(writer.retire_old(step))
    writer.purge()


def reconcile_store(ctx: StageContext, writer: CheckpointWriter) -> None:
    """Make the store's checkpoint rows of this stage match the disk, after a
    kill that fell between a rename and its store write: rows whose folder is
    gone (or whose weights are torn: only older versions wrote in place) are
    forgotten, whole folders the store never heard of are recorded."""
    if not writer.is_main:
        return
    on_disk = writer.checkpoints()
    rows = [c for c in ctx.store.list_checkpoints(stage_id=ctx.stage_id) if not c.is_final]
    listed = {Path(c.path) for c in rows}
    gone = sorted(path for path in listed
                  if path.parent == writer.root
                  and (not path.is_dir() or checkpoint_problem(path, weights_only=True) is not None))
    ctx.checkpoints_removed(gone)
    for step, folder in sorted(on_disk.items()):
        if folder not in listed and checkpoint_problem(folder) is None:
            ctx.checkpoint_saved(step, folder)


def start_writing(ctx: StageContext, writer: CheckpointWriter) -> None:
    """What a stage does before its first step: leftovers of a kill removed,
    the store put in step with the disk. Every process calls it (the others
    wait for the main one, so none stages into a folder being removed)."""
    removed = writer.clean_leftovers()
    if removed:
        ctx.log("removed what an interrupted checkpoint save left: " + ", ".join(p.name for p in removed))
    reconcile_store(ctx, writer)
    writer.barrier()


# --- the Trainer ------------------------------------------------------------------


def write_trainer_checkpoints_atomically(trainer: Any, ctx: StageContext) -> CheckpointWriter:
    """Make a transformers Trainer (or a TRL one) write its checkpoints
    through a CheckpointWriter; the writer, for the callback that records them.

    The Trainer writes `output_dir/checkpoint-STEP` in place and then deletes
    old ones with `shutil.rmtree` (`Trainer._save_checkpoint` and
    `trainer_utils.rotate_checkpoints`, read in transformers 5.24). It has no
    public hook for where a checkpoint goes, so this wraps two private
    methods on this one instance: `_save_checkpoint` (to stage before and
    publish after) and `_get_output_dir`, which `_save_checkpoint` and TRL's
    overrides of it (GRPO's extra state file, for one) ask for the folder
    under which `checkpoint-STEP` is written. While a checkpoint is saved it
    answers the staging root; the Trainer's own rotation then runs there,
    where it finds only the checkpoint being written, and deletes nothing:
    pruning is the writer's (`keep` = the arguments' `save_total_limit`).
    A transformers version without these methods fails the stage here,
    rather than writing checkpoints in place."""
    _require_private_api(trainer)
    args = trainer.args
    writer = CheckpointWriter(Path(args.output_dir), keep=args.save_total_limit, is_main=bool(args.should_save),
                              barrier=trainer.accelerator.wait_for_everyone)
    original_save = trainer._save_checkpoint  # noqa: SLF001  # see the docstring: no public hook
    original_output_dir = trainer._get_output_dir  # noqa: SLF001  # likewise
    staging = False

    def output_dir(trial: Any = None) -> str:
        return str(writer.staging_root) if staging else str(original_output_dir(trial=trial))

    def save_checkpoint(model: Any, trial: Any) -> None:
        nonlocal staging
        step = trainer.state.global_step
        writer.begin(step)
        staging = True
        try:
            original_save(model, trial)
        finally:
            staging = False
        writer.publish(step)

    # On this instance only: the class, and every other Trainer, keep the library's methods.
    trainer._get_output_dir = output_dir  # noqa: SLF001  # see the docstring: no public hook
    trainer._save_checkpoint = save_checkpoint  # noqa: SLF001  # see the docstring: no public hook
    start_writing(ctx, writer)
    return writer


def _require_private_api(trainer: Any) -> None:
    for name, parameters in (("_save_checkpoint", ["model", "trial"]), ("_get_output_dir", ["trial"])):
        method = getattr(type(trainer), name, None)
        found = list(inspect.signature(method).parameters)[1:] if callable(method) else None
        if found != parameters:
            raise StageFailed(
                f"this transformers version's Trainer.{name} is not the one checkpoints are staged through "
                f"(expected parameters {parameters}, found {found}; read in transformers 5.24): "
                "engine/stages/common/checkpoint_writing.py needs updating")


# --- syncing ------------------------------------------------------------------


def _fsync_tree(root: Path) -> None:
    """Every file and folder under `root` on disk, so that the rename that
    publishes it cannot reach the disk before its contents (a power cut)."""
    for folder, _, files in os.walk(root):
        for name in files:
            descriptor = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone: either way nothing to do
        folder.rmdir()
