"""Exporting a checkpoint as a folder that other tools load: `rlhf export`.

    result = run_export("rlhf-workspace/runs/00001/sft/final", "exported/sft", merge_lora=True)
    print(result.message)

The folder holds what plain transformers, vLLM and llama.cpp's converter
read: a standard `config.json`, `generation_config.json`, the weights as
safetensors (sharded above 5 GB, with an index) and the tokenizer files
(`tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`).

A LoRA adapter (a folder with `adapter_config.json`) is exported merged into
its base model with `merge_lora=True` (a plain model again), or as the
adapter itself otherwise, which needs its base model to be used.

This module is torch-free, like the rest of the engine's API: it checks the
input here, in one line a person can act on (`UserInputError`), and does the
loading and saving in a child process (`python -m engine.stages.common.export_weights`).
Weights are only ever read from safetensors: `.bin` files are pickles, and
unpickling a file can run code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.errors import EngineError, UserInputError

if TYPE_CHECKING:
    from store.reads import StoreReader

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: what a child process prints first on the line carrying its result
RESULT_PREFIX = "EXPORT-RESULT "
#: exit code of the child for a problem with its input (the message is on stderr)
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint folder holds, found without loading it."""

    path: Path
    kind: Literal["model", "adapter"]
    #: an adapter's base model: a folder or a hub id, as adapter_config.json names it
    base: str | None = None


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Check that `path` is a model folder with safetensors weights, or a LoRA
    adapter folder; raises UserInputError naming the path otherwise."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserInputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserInputError(f"{folder}: is a file; expected a model folder (config.json and *.safetensors)")
    folder = folder.resolve()
    names = {p.name for p in folder.iterdir()}
    pickles = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")))

    if ADAPTER_CONFIG in names:
        if ADAPTER_WEIGHTS not in names:
            raise UserInputError(_no_safetensors(folder, pickles, "adapter_model.safetensors"))
        try:
            config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"{folder / ADAPTER_CONFIG}: not readable JSON ({exc})") from None
        base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
        if not isinstance(base, str) or not base:
            raise UserInputError(f"{folder / ADAPTER_CONFIG}: names no base model (base_model_name_or_path)")
        return CheckpointInfo(folder, "adapter", base)

    if "config.json" in names:
        if not any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
            raise UserInputError(_no_safetensors(folder, pickles, "model.safetensors"))
        return CheckpointInfo(folder, "model")

    hint = ""
    if (folder / "final" / "config.json").exists() or (folder / "final" / ADAPTER_CONFIG).exists():
        hint = f"; did you mean {folder / 'final'}?"
    elif any(n.startswith("checkpoint-") for n in names):
        newest = max((n for n in names if n.startswith("checkpoint-")),
                     key=lambda n: int(n.rpartition("-")[2]) if n.rpartition("-")[2].isdigit() else -1)
        hint = f"; did you mean {folder / newest}?"
    raise UserInputError(
        f"{folder}: not a model folder: no config.json (a model) or {ADAPTER_CONFIG} (a LoRA adapter){hint}"
    )


def resolve_checkpoint(checkpoint: str | os.PathLike[str], store: StoreReader | None) -> Path:
    """The folder `checkpoint` names: a folder as it is, or `RUN:STAGE` (a run's
    id or name, one of its stages) for that stage's final model, read from
    `store`. A folder that exists wins; UserInputError names what is missing."""
    text = os.fspath(checkpoint)
    folder = Path(text).expanduser()
    run_ref, sep, stage_name = text.rpartition(":")
    if folder.exists() or not sep or not run_ref or not stage_name or "/" in stage_name or store is None:
        return folder
    from store import StoreError

    try:
        run = store.get_run(run_ref)
    except StoreError:
        raise UserInputError(f"{text}: no such folder, and no run {run_ref!r} in this workspace "
                             "(RUN:STAGE names a stage's final model)") from None
    stages = store.list_stages(run_id=run.id)
    stage = next((s for s in stages if s.name == stage_name), None)
    if stage is None:
        names = ", ".join(s.name for s in stages)
        raise UserInputError(f"{text}: run '{run.name}' has no stage '{stage_name}' (stages: {names})")
    if not stage.output_path:
        raise UserInputError(f"{text}: stage '{stage_name}' of run '{run.name}' has no final model "
                             f"(it is {stage.status.value})")
    return Path(stage.output_path)


def adapter_base(info: CheckpointInfo) -> tuple[Literal["path", "hub"], str]:
    """Where an adapter's base model is: ("path", an absolute folder) or
    ("hub", an id). A relative path is read from the adapter's folder if it
    exists there, else from the current folder. Raises UserInputError if the
    base names a folder that does not exist."""
    base = str(info.base)
    path = Path(base).expanduser()
    candidates = [path] if path.is_absolute() else [info.path / path, path]
    for candidate in candidates:
        if candidate.exists():
            return "path", str(candidate.resolve())
    if base.startswith(("/", "./", "../", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", base):
        raise UserInputError(f"{info.path}: its base model {base} does not exist")
    return "hub", base


def _no_safetensors(folder: Path, pickles: list[str], wanted: str) -> str:
    if pickles:
        return (
            f"{folder}: has only pickled weights ({', '.join(pickles)}), and loading a pickle can run "
            f"code; refusing. Convert it to safetensors ({wanted}) with the tool that wrote it"
        )
    return f"{folder}: no weights found (expected {wanted})"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    kind: Literal["model", "adapter"]  # what the exported folder holds
    merged: bool  # an adapter merged into its base model
    base: str | None  # the base model an exported adapter needs
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """What a person reads after the export."""
        if self.kind == "adapter":
            head = (f"exported the LoRA adapter to {self.out}; it needs its base model {self.base} "
                    "(export with --merge-lora for a standalone model)")
        elif self.merged:
            head = f"exported {self.out}: the adapter merged into its base model {self.base}"
        else:
            head = f"exported {self.out}"
        return "\n".join([head, *self.notes])


def run_export(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    merge_lora: bool = False,
    trust_remote_code: bool = False,
    timeout: float | None = None,
    store: StoreReader | None = None,
) -> ExportResult:
    """Export `checkpoint` (a folder, or RUN:STAGE read from `store`) into the new folder `out` (in a child process),
    with its model card (README.md) where the folder's provenance record or
    `store` (the workspace's) says how it was trained.

    `out` must not exist, or be an empty folder. Nothing is left at `out` if
    the export fails. Raises UserInputError for bad input (the message names
    the path), EngineError if the child fails otherwise."""
    info = inspect_checkpoint(resolve_checkpoint(checkpoint, store))
    target = Path(out).expanduser().resolve()
    if target.exists():
        if not target.is_dir():
            raise UserInputError(f"{target}: exists and is a file; --out needs a new or empty folder")
        if any(target.iterdir()):
            raise UserInputError(f"{target}: exists and is not empty; choose a new folder for the export")
    if target == info.path or info.path in target.parents:
        raise UserInputError(f"{target}: is inside the checkpoint {info.path}; export somewhere else")
    if info.kind == "adapter" and merge_lora:
        adapter_base(info)  # a base folder that is gone: say so now, not after loading libraries

    command = [sys.executable, "-m", "engine.stages.common.export_weights", str(info.path), "--out", str(target)]
    if merge_lora:
        command.append("--merge-lora")
    if trust_remote_code:
        command.append("--trust-remote-code")
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    # The child imports this package: make sure it is found from any folder.
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EngineError(f"export of {info.path} did not finish within {timeout:.0f} s") from None
    if done.returncode == EXIT_BAD_INPUT:
        raise UserInputError(_last_line(done.stderr) or f"cannot export {info.path}")
    result_line = next((line for line in reversed(done.stdout.splitlines()) if line.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or result_line is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise EngineError(f"export of {info.path} failed (exit code {done.returncode}):\n{tail}")
    data = json.loads(result_line[len(RESULT_PREFIX):])
    files, notes = list(data["files"]), list(data["notes"])
    card = write_export_card(info.path, Path(data["out"]), store, notes)
    if card is not None and card.name not in files:
        files = sorted([*files, card.name])
    return ExportResult(out=Path(data["out"]), kind=data["kind"], merged=data["merged"], base=data["base"],
                        files=files, notes=notes)


def write_export_card(checkpoint: Path, out: Path, store: StoreReader | None, notes: list[str]) -> Path | None:
    """The model card of `checkpoint`, written into its export `out`, where
    the checkpoint's provenance record or `store` says how it was trained
    (None: nothing does, or `out` holds a README.md someone else wrote).
    Written here, not in the child, which has no store. A card that cannot
    be written is a line in `notes`: the weights are exported whole by now,
    and the export stands without its card."""
    # Imported here: the child imports this module for its constants, and the store's models cost it a second.
    from engine.recipe.model_card import find_card_source, render_card, write_card

    try:
        found = find_card_source(checkpoint, store)
        return write_card(out, render_card(found, store)) if found.known else None
    except Exception as exc:  # noqa: BLE001  a store or card problem must not turn a finished export into a failure
        notes.append(f"no model card written ({type(exc).__name__}: {' '.join(str(exc).split())})")
        return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


__all__ = ["CheckpointInfo", "ExportResult", "adapter_base", "inspect_checkpoint", "resolve_checkpoint", "run_export",
           "write_export_card"]
