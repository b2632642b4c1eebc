"""Which checkpoint a resumed stage starts from: the newest one that is whole.

A kill can leave a checkpoint torn: a `trainer_state.json` cut at 32 KiB, a
truncated `model.safetensors`, a folder half deleted by the rotation of old
checkpoints, a missing `optimizer.pt`. Resuming from such a folder fails
with a message that names no file, or, worse, silently starts a fresh
optimizer. So a checkpoint is used only when its files are there and parse:

- `trainer_state.json` (the Trainer's, or PPO's, written last) parses as JSON;
- every `*.json` parses, and every `*.safetensors` has a header that parses
  and a size that holds every tensor it lists;
- it has weights (a model, an adapter, or a sharded index with its shards);
- it has its optimizer state (`optimizer.pt` and `scheduler.pt` for a
  Trainer's checkpoint, or the shards DeepSpeed and FSDP save in their place;
  `ppo_state.pt` for PPO's), unless the resume is of the weights only.

Otherwise the previous whole one is used, and the stage's log says which
folders were skipped and why. Torch-free: the supervisor picks the folder
before any library loads, and never unpickles anything to do it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

#: the file a checkpoint writes last (the Trainer's, and PPO's by the same convention)
CHECKPOINT_DONE_MARKER = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
#: optimizer and schedule state, by who wrote the checkpoint: resuming without it is not resuming
TRAINER_STATE_FILES = ("optimizer.pt", "scheduler.pt")
PPO_STATE_FILE = "ppo_state.pt"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
SHARD_INDEX = "model.safetensors.index.json"


def checkpoint_problem(folder: Path, *, weights_only: bool = False) -> str | None:
    """Why `folder` cannot be resumed from, in a few words; None if it is whole."""
    marker = folder / CHECKPOINT_DONE_MARKER
    if not marker.is_file():
        return f"no {CHECKPOINT_DONE_MARKER} (not finished writing)"
    for path in sorted(folder.rglob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return f"{path.relative_to(folder)} is cut short or not JSON"
    for path in sorted(folder.rglob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return f"{path.relative_to(folder)}: {problem}"
    if not _has_weights(folder):
        return "no weights (model.safetensors, adapter_model.safetensors or a sharded index)"
    if not weights_only and not _sharded_optimizer_state(folder):
        ppo = json.loads(marker.read_text(encoding="utf-8")).get("stage") == "ppo"
        needed = (PPO_STATE_FILE,) if ppo else TRAINER_STATE_FILES
        missing = [name for name in needed if not (folder / name).is_file() or (folder / name).stat().st_size == 0]
        if missing:
            return f"no optimizer state ({', '.join(missing)} missing or empty)"
    return None


def _sharded_optimizer_state(folder: Path) -> bool:
    """Whether the optimizer state was saved sharded, as DeepSpeed (`global_stepN/`)
    and FSDP (`optimizer_0/`) save it, in place of `optimizer.pt`."""
    return any(child.is_dir() and (child.name.startswith("global_step") or child.name.startswith("optimizer_"))
               and any(child.iterdir()) for child in folder.iterdir())


class OptimizerStateLost(Exception):
    """The newest checkpoint with whole weights has no optimizer state, and no
    earlier one is whole: resuming would silently start a fresh optimizer."""

    def __init__(self, folder: Path, problem: str) -> None:
        super().__init__(
            f"cannot resume: {folder.name} has whole weights but {problem}, and no earlier checkpoint "
            "is whole; `rlhf resume RUN --weights-only` continues from its weights with a fresh "
            "optimizer and schedule (the curves then differ from an uninterrupted run)")
        self.folder = folder


def newest_whole_checkpoint(checkpoints_dir: Path, *, weights_only: bool = False,
                            skipped: Callable[[Path, str], None] | None = None) -> Path | None:
    """The newest `checkpoint-STEP` folder that is whole; each newer one
    passed over is reported to `skipped(folder, why)`.

    None when there is none at all (the stage starts over). Raises
    OptimizerStateLost when the only usable weights lack their optimizer
    state and the resume is not of the weights only: starting over, or
    quietly with a fresh optimizer, would both throw away what the user has."""
    if not checkpoints_dir.is_dir():
        return None
    found = sorted(
        ((int(match.group(1)), child) for child in checkpoints_dir.iterdir()
         if child.is_dir() and (match := CHECKPOINT_NAME.match(child.name))),
        reverse=True,
    )
    weights_without_state: tuple[Path, str] | None = None
    for _, folder in found:
        problem = checkpoint_problem(folder, weights_only=weights_only)
        if problem is None:
            return folder
        if weights_without_state is None and checkpoint_problem(folder, weights_only=True) is None:
            weights_without_state = (folder, problem)
            problem += " (`rlhf resume --weights-only` would use its weights)"
        if skipped is not None:
            skipped(folder, problem)
    if weights_without_state is not None:
        raise OptimizerStateLost(*weights_without_state)
    return None


def _has_weights(folder: Path) -> bool:
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return True
    index = folder / SHARD_INDEX
    if not index.is_file():
        return False
    shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
    return bool(shards) and all((folder / shard).is_file() for shard in shards)


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header giving
    each tensor's byte range, then the bytes: a cut file ends before them."""
    size = path.stat().st_size
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                return "cut short (no header)"
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8:
                return "cut short (in its header)"
            header = json.loads(file.read(length))
    except (OSError, ValueError):
        return "its header is not readable"
    ends = [info["data_offsets"][1] for name, info in header.items()
            if name != "__metadata__" and isinstance(info, dict) and "data_offsets" in info]
    if 8 + length + max(ends, default=0) > size:
        return f"cut short ({size} bytes of {8 + length + max(ends, default=0)})"
    return None
