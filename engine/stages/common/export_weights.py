"""The child process of `rlhf export`:
`python -m engine.stages.common.export_weights CHECKPOINT --out DIR [--merge-lora]`.

Started by `engine.runtime.export_job.run_export`, which checks the input first; the
checks run again here, so the module is safe to call by hand too. It reads
top to bottom: look at the checkpoint, load it (merging an adapter if asked),
save it into a temporary folder beside DIR, rename that into place. A
failure leaves nothing at DIR.

The last line on stdout is the result as JSON (after `RESULT_PREFIX`); a
problem with the input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from engine.errors import StageFailed, UserInputError
from engine.recipe.provenance import PROVENANCE_FILE
from engine.runtime.export_job import ADAPTER_CONFIG, ADAPTER_WEIGHTS, EXIT_BAD_INPUT, RESULT_PREFIX, inspect_checkpoint
from engine.stages.common.inference import base_source, load_merged_adapter
from store.permissions import folder_mode

#: the size above which weights are split into several files (with an index), as on the hub
MAX_SHARD_SIZE = "5GB"
#: files an adapter is exported with, besides the tokenizer's
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md")


def export(checkpoint: Path, out: Path, *, merge_lora: bool, trust_remote_code: bool = False) -> dict[str, Any]:
    info = inspect_checkpoint(checkpoint)
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"{out}: exists and is not empty; choose a new folder for the export")
    out.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if info.kind == "adapter" and not merge_lora:
            kind, merged = "adapter", False
            for name in ADAPTER_FILES:
                if (info.path / name).exists():
                    shutil.copy2(info.path / name, tmp / name)
        else:
            kind, merged = "model", info.kind == "adapter"
            if info.kind == "adapter":
                # Merged in the base model's own dtype, as the adapter was trained on it.
                model = load_merged_adapter(info, dtype="auto", trust_remote_code=trust_remote_code)
            else:
                if merge_lora:
                    notes.append("--merge-lora: not a LoRA adapter, so there was nothing to merge")
                model = _load_model(info.path, trust_remote_code)
            # Training switches the KV cache off; every tool that generates wants it on.
            model.config.use_cache = True
            model.save_pretrained(tmp, max_shard_size=MAX_SHARD_SIZE)
        _copy_provenance(info.path, tmp)
        if not _save_tokenizer(info.path, tmp, trust_remote_code):
            if info.kind == "adapter" and _save_tokenizer(_base_of(info), tmp, trust_remote_code):
                notes.append(f"the tokenizer comes from the base model {info.base}")
            else:
                notes.append(f"{info.path} holds no tokenizer: the export has none; "
                             "add the tokenizer files the model was trained with")
        tmp.chmod(folder_mode())  # mkdtemp makes it private; an export is shared like any model folder
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "out": str(out), "kind": kind, "merged": merged, "base": info.base,
        "files": sorted(p.name for p in out.iterdir()), "notes": notes,
    }


def _copy_provenance(checkpoint: Path, target: Path) -> None:
    """The checkpoint's provenance record goes with the export (a stage's
    `adapter/` has none of its own: its stage folder's is the one)."""
    for folder in (checkpoint, checkpoint.parent) if checkpoint.name == "adapter" else (checkpoint,):
        if (folder / PROVENANCE_FILE).is_file():
            shutil.copy2(folder / PROVENANCE_FILE, target / PROVENANCE_FILE)
            return


def _load_model(folder: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        # dtype "auto": the dtype the weights were saved in, so nothing is rounded.
        return AutoModelForCausalLM.from_pretrained(
            folder, dtype="auto", use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # a partial or corrupt folder raises many types
        raise StageFailed(f"cannot load a causal language model from {folder}: {exc}") from exc


def _base_of(info: Any) -> str:
    try:
        return base_source(info).value
    except StageFailed:
        return str(info.base)  # a missing folder: the tokenizer load below fails and says so


def _save_tokenizer(source: Path | str, target: Path, trust_remote_code: bool) -> bool:
    """Load the tokenizer of `source` (a folder or hub id) and save it in
    `target`: tokenizer.json, tokenizer_config.json, chat_template.jinja.
    False if it has none."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return False
    tokenizer.save_pretrained(target)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.stages.common.export_weights")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--merge-lora", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    runtime.silence_libraries()
    try:
        result = export(args.checkpoint, args.out, merge_lora=args.merge_lora,
                        trust_remote_code=args.trust_remote_code)
    except (UserInputError, StageFailed) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(RESULT_PREFIX + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
