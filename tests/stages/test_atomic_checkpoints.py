"""Checkpoints are written whole or not at all (issue #14): staged, renamed into
place, pruned by renaming away before deleting; a kill at any point leaves the
old set of checkpoints or the new one, and the store lists what is on disk.

The helper's tests kill the save (a BaseException raised at each file-system
or store step in turn, an rmtree cut after one file) and then start again as
a resumed stage would. One real pretrain stage shows the Trainer's checkpoints
going through it."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StageFailed
from engine.runtime.checkpoints import CHECKPOINT_NAME, checkpoint_problem, newest_whole_checkpoint
from engine.stages.common import checkpoint_writing
from engine.stages.common.checkpoint_writing import (
    DELETING,
    STAGING,
    CheckpointWriter,
    record_and_prune,
    start_writing,
    write_trainer_checkpoints_atomically,
)
from engine.stages.common.context import StageContext
from engine.stages.pretrain.spec import PretrainSpec


class Killed(BaseException):
    """The process died here (BaseException: no `except Exception` catches it)."""


def write_whole_checkpoint(folder: Path, step: int) -> None:
    """What checkpoint_problem accepts: weights, optimizer state, the marker last."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    (folder / "optimizer.pt").write_bytes(b"optimizer")
    (folder / "scheduler.pt").write_bytes(b"scheduler")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def save(ctx: StageContext, writer: CheckpointWriter, step: int) -> None:
    """A whole save, as a stage does it: stage, write, publish, record, prune."""
    staged = writer.begin(step)
    write_whole_checkpoint(staged, step)
    folder = writer.publish(step)
    record_and_prune(ctx, writer, step, folder)


def published(root: Path) -> list[int]:
    """The steps of the `checkpoint-STEP` names a resume would consider."""
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))


def listed(ctx: StageContext) -> list[Path]:
    return sorted(Path(c.path) for c in ctx.store.list_checkpoints(stage_id=ctx.stage_id) if not c.is_final)


@pytest.fixture
def ctx(make_context) -> StageContext:
    return make_context(PretrainSpec())


def test_saves_keep_the_newest_whole_checkpoints_and_the_store_matches(ctx: StageContext) -> None:
    writer = CheckpointWriter(ctx.checkpoints_dir, keep=2)
    for step in (2, 4, 6, 8):
        save(ctx, writer, step)
    root = ctx.checkpoints_dir
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-6", "checkpoint-8"]  # no staging, no deleting
    assert listed(ctx) == [root / "checkpoint-6", root / "checkpoint-8"]
    assert all(checkpoint_problem(root / f"checkpoint-{step}") is None for step in (6, 8))


def test_folders_from_before_a_resume_are_replaced_and_never_push_the_new_one_out(ctx: StageContext) -> None:
    root = ctx.checkpoints_dir
    writer = CheckpointWriter(root, keep=1)
    save(ctx, writer, 4)
    for step in (6, 9):  # written in place by an older version and cut short; 6 even made it into the store
        (root / f"checkpoint-{step}").mkdir()
        (root / f"checkpoint-{step}" / "trainer_state.json").write_text('{"global_')
    ctx.checkpoint_saved(6, root / "checkpoint-6")
    save(ctx, writer, 6)  # the run resumed from checkpoint-4: step 6 again, then pruning
    assert published(root) == [6] and checkpoint_problem(root / "checkpoint-6") is None
    assert listed(ctx) == [root / "checkpoint-6"]  # once
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-6"]


def test_a_save_without_its_marker_publishes_nothing(ctx: StageContext) -> None:
    writer = CheckpointWriter(ctx.checkpoints_dir, keep=2)
    save(ctx, writer, 2)
    staged = writer.begin(4)
    (staged / "model.safetensors").write_bytes(b"\0" * 8)  # the marker never came
    with pytest.raises(StageFailed, match=r"no trainer_state\.json"):
        writer.publish(4)
    assert published(ctx.checkpoints_dir) == [2]


class KillAt:
    """Raises Killed at the `at`-th call of the wrapped steps (0-based); an
    rmtree killed mid-way deletes one file first, as a real kill would."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def tick(self) -> bool:
        self.calls += 1
        return self.calls - 1 == self.at

    def wrap(self, function: Callable[..., Any], *, cut_tree: bool = False) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.tick():
                if cut_tree and Path(args[0]).is_dir():
                    first_file = next((p for p in Path(args[0]).rglob("*") if p.is_file()), None)
                    if first_file is not None:
                        first_file.unlink()
                raise Killed
            return function(*args, **kwargs)
        return wrapped


def kill_points(monkeypatch: pytest.MonkeyPatch, ctx: StageContext, at: int) -> KillAt:
    killer = KillAt(at)
    monkeypatch.setattr(checkpoint_writing.os, "rename", killer.wrap(checkpoint_writing.os.rename))
    monkeypatch.setattr(checkpoint_writing.shutil, "rmtree", killer.wrap(shutil.rmtree, cut_tree=True))
    monkeypatch.setattr(ctx, "checkpoint_saved", killer.wrap(ctx.checkpoint_saved))
    monkeypatch.setattr(ctx, "checkpoints_removed", killer.wrap(ctx.checkpoints_removed))
    return killer


@pytest.mark.parametrize("stale", [False, True], ids=["new-step", "step-written-before-a-resume"])
def test_a_kill_at_any_step_leaves_the_old_set_or_the_new_one(make_context, monkeypatch, stale: bool) -> None:
    at = 0
    while True:
        ctx = make_context(PretrainSpec())  # a fresh stage for each kill point
        root = ctx.checkpoints_dir
        writer = CheckpointWriter(root, keep=2)
        for step in (2, 4):
            save(ctx, writer, step)
        if stale:  # a whole checkpoint-6 of a run that then went back to checkpoint-4 (--weights-only, say)
            (root / "checkpoint-6").mkdir()
            write_whole_checkpoint(root / "checkpoint-6", 6)
            (root / "checkpoint-6" / "stale").write_text("")
            ctx.checkpoint_saved(6, root / "checkpoint-6")
        with monkeypatch.context() as patch:
            killer = kill_points(patch, ctx, at)
            try:
                save(ctx, writer, 6)
                finished = True
            except Killed:
                finished = False

        # Right after the kill: every name a resume considers is whole, and so is every folder the
        # store lists that is still there under its name (gone is fine, half deleted is not).
        steps = published(root)
        assert steps in ([2, 4], [2, 4, 6], [4, 6]), (at, steps)
        assert all(checkpoint_problem(root / f"checkpoint-{s}") is None for s in steps), at
        assert all(checkpoint_problem(p) is None for p in listed(ctx) if p.exists()), at
        assert newest_whole_checkpoint(root) in (root / "checkpoint-4", root / "checkpoint-6")

        # The stage starts again: leftovers are gone and the store lists exactly what is on disk.
        resumed = make_context(PretrainSpec(), like=ctx)
        start_writing(resumed, CheckpointWriter(root, keep=2))
        assert not (root / STAGING).exists() and not (root / DELETING).exists(), at
        assert listed(resumed) == [root / f"checkpoint-{s}" for s in published(root)], at
        if finished:
            assert published(root) == [4, 6] and not (root / "checkpoint-6" / "stale").exists()
            break
        at += 1
    # rename in, saved, rename out, removed, rmtree (and moving the stale folder aside): each was a kill point.
    assert killer.calls == at == (8 if stale else 7)


def test_a_kill_while_files_are_written_leaves_the_old_set(ctx: StageContext) -> None:
    root = ctx.checkpoints_dir
    writer = CheckpointWriter(root, keep=2)
    save(ctx, writer, 2)
    staged = writer.begin(4)
    (staged / "model.safetensors").write_bytes(b"\1" * 3)  # killed here
    (root / ".checkpoint-3.tmp").mkdir()  # what PPO's older staging could leave
    assert published(root) == [2]

    start_writing(ctx, CheckpointWriter(root, keep=2))
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-2"]
    assert listed(ctx) == [root / "checkpoint-2"]


def test_start_forgets_rows_of_missing_or_torn_folders_and_records_unlisted_whole_ones(ctx: StageContext) -> None:
    root = ctx.checkpoints_dir
    for step in (2, 4, 6):
        (root / f"checkpoint-{step}").mkdir(parents=True)
        write_whole_checkpoint(root / f"checkpoint-{step}", step)
    ctx.checkpoint_saved(2, root / "checkpoint-2")
    ctx.checkpoint_saved(4, root / "checkpoint-4")
    ctx.checkpoint_saved(5, root / "checkpoint-5")  # renamed away, the kill came before the store heard
    (root / "checkpoint-4" / "model.safetensors").write_bytes(b"\0" * 4)  # an older in-place rmtree's half
    start_writing(ctx, CheckpointWriter(root, keep=3))
    assert listed(ctx) == [root / "checkpoint-2", root / "checkpoint-6"]


def test_a_trainer_without_the_private_methods_fails_loudly(ctx: StageContext) -> None:
    class NotQuiteATrainer:
        def _save_checkpoint(self, model: Any, trial: Any) -> None: ...

    with pytest.raises(StageFailed, match="_get_output_dir"):
        write_trainer_checkpoints_atomically(NotQuiteATrainer(), ctx)


# --- a real stage -------------------------------------------------------------------


class FolderWatcher:
    """Looks at every `checkpoint-STEP` name in a folder, over and over, while
    a stage trains; notes any it finds that is not whole."""

    def __init__(self, root: Path) -> None:
        self.root, self.looks, self.torn = root, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            if not self.root.is_dir():
                continue
            for folder in list(self.root.iterdir()):
                if not CHECKPOINT_NAME.match(folder.name):
                    continue
                self.looks += 1
                problem = checkpoint_problem(folder)
                # A folder renamed away (pruned) between the listing and the look is no tear.
                if problem is not None and folder.exists():
                    self.torn.append(f"{folder.name}: {problem}")

    def __enter__(self) -> FolderWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def watched() -> Iterator[Callable[[Path], FolderWatcher]]:
    watchers: list[FolderWatcher] = []

    def watch(root: Path) -> FolderWatcher:
        watchers.append(FolderWatcher(root))
        return watchers[-1]

    yield watch
    for watcher in watchers:
        watcher.__exit__()


@pytest.mark.slow  # trains a real (tiny) model: about 15 s on an idle 2-core machine, a minute under load
def test_a_pretrain_stage_publishes_only_whole_checkpoints(make_context, watched, monkeypatch) -> None:
    from engine.stages.pretrain import stage as pretrain

    spec = PretrainSpec(from_="builtin:llama-1m", block_size=32, batch_size=4, max_steps=8, learning_rate=3e-3,
                        warmup_steps=1, eval_every=100, eval_batches=1, save_every=2, keep_checkpoints=2,
                        max_documents=200)
    first = make_context(spec)
    root = first.checkpoints_dir

    # The save of step 6 dies after the Trainer wrote it, before it was published.
    publish = CheckpointWriter.publish

    def dies_at_six(self: CheckpointWriter, step: int) -> Path:
        if step == 6:
            raise Killed
        return publish(self, step)

    with monkeypatch.context() as patch, watched(root) as before:
        patch.setattr(CheckpointWriter, "publish", dies_at_six)
        with pytest.raises(Killed):
            pretrain.run(first)
    assert before.looks > 0 and before.torn == []
    assert published(root) == [2, 4] and (root / STAGING / "checkpoint-6" / "trainer_state.json").is_file()
    assert listed(first) == [root / "checkpoint-2", root / "checkpoint-4"]

    # Resumed from the newest whole checkpoint, as the supervisor would, to the end.
    resume_from = newest_whole_checkpoint(root)
    assert resume_from == root / "checkpoint-4"
    with watched(root) as watcher:
        pretrain.run(make_context(spec, like=first, resume_from=resume_from))
    assert watcher.looks > 0 and watcher.torn == []
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-6", "checkpoint-8"]
    assert listed(first) == [root / "checkpoint-6", root / "checkpoint-8"]
    assert all(checkpoint_problem(root / name) is None for name in ("checkpoint-6", "checkpoint-8"))
    state = json.loads((root / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
