"""Publishing a checkpoint to the Hugging Face hub: `rlhf push`.

    result = run_push("rlhf-workspace/runs/00003/dpo/final", "my-org/tiny-dpo", store=engine.reads)
    print(result.message)

The folder must be one plain transformers (or peft) loads, checked as
`rlhf export` checks it (engine/runtime/export_job.py: config.json and
safetensors, or a LoRA adapter; a pickle-only folder is refused). Its model
card (README.md, engine/recipe/model_card.py) is written or refreshed from
the store first, then the repo is created if need be and the folder
uploaded in one commit. Pickles (a Trainer checkpoint's optimizer.pt,
training_args.bin) and hidden files are left out of the upload: unpickling a
downloaded file can run code, and optimizer state is not a model.

Torch-free (huggingface_hub is), so it runs in the engine's API process
like `rlhf export`'s front; every problem with the input is one
UserInputError line, said before anything is uploaded.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import EngineError, UserInputError
from engine.recipe.model_card import CARD_FILE, build_card, write_card
from engine.runtime.export_job import inspect_checkpoint, resolve_checkpoint

if TYPE_CHECKING:
    from store.reads import StoreReader

#: ORG/NAME as the hub spells a repo id
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", re.ASCII)
#: what an upload leaves out: pickles, and hidden files (our temporary files, .gitattributes of a clone)
LEFT_OUT = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", ".*", "**/.*"]
LOGIN_HINT = "log in with `hf auth login`, or set HF_TOKEN to a token with write access"


class HubApi(Protocol):
    """The part of huggingface_hub.HfApi a push calls (a test passes a fake)."""

    def create_repo(self, repo_id: str, *, private: bool | None = ..., exist_ok: bool = ...,
                    repo_type: str | None = ...) -> Any: ...

    def create_branch(self, repo_id: str, *, branch: str, exist_ok: bool = ..., repo_type: str | None = ...) -> Any: ...

    def upload_folder(self, *, repo_id: str, folder_path: str | Path, commit_message: str | None = ...,
                      revision: str | None = ..., repo_type: str | None = ...,
                      ignore_patterns: list[str] | str | None = ...) -> Any: ...


@dataclass(frozen=True)
class PushResult:
    repo: str
    folder: Path
    revision: str | None
    url: str
    uploaded: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """What a person reads after the push."""
        where = f" (branch {self.revision})" if self.revision else ""
        lines = [f"pushed {self.folder} to {self.repo}{where}: {len(self.uploaded)} files, {self.url}"]
        if self.left_out:
            lines.append(f"left out (pickles and hidden files): {', '.join(self.left_out)}")
        return "\n".join([*lines, *self.notes])


def run_push(
    checkpoint: str | os.PathLike[str],
    repo: str,
    *,
    store: StoreReader | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    api: HubApi | None = None,
) -> PushResult:
    """Write the card of `checkpoint` (a folder, or RUN:STAGE read from
    `store`) and upload the folder to the hub repo
    `repo` (created if missing; `private` for a new one), on the branch
    `revision` (created from main if missing) or main.

    Raises UserInputError for bad input (nothing is uploaded), EngineError
    when the hub refuses or cannot be reached."""
    if not REPO_ID.fullmatch(repo):
        raise UserInputError(f"--repo {repo!r}: expected a hub repo id ORG/NAME, such as my-org/tiny-sft")
    if revision is not None and not revision.strip():
        raise UserInputError("--revision: expected a branch name, got an empty string")
    # A folder transformers or peft loads (or RUN:STAGE, that stage's final model), or a one-line refusal.
    info = inspect_checkpoint(resolve_checkpoint(checkpoint, store))
    token = _token()
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)

    notes = []
    try:
        card = write_card(info.path, build_card(info.path, store, title=repo))
    except OSError as exc:
        raise UserInputError(f"{info.path}: cannot write its model card {CARD_FILE} ({exc.strerror or exc})") from None
    if card is None:
        notes.append(f"kept {info.path / CARD_FILE}: it was not written by rlhf-console")
    files = sorted(str(p.relative_to(info.path)) for p in info.path.rglob("*") if p.is_file())
    left_out = [f for f in files if _left_out(f)]
    message = commit_message or f"Upload {info.path.name} with rlhf-console"
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo, branch=revision, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=str(info.path), commit_message=message, revision=revision,
                          repo_type="model", ignore_patterns=LEFT_OUT)
    except Exception as exc:  # the hub's HTTP errors, no network, a token without write access
        raise EngineError(f"push to {repo} failed: {_one_line(exc)}") from exc
    return PushResult(repo=repo, folder=info.path, revision=revision, url=str(url),
                      uploaded=[f for f in files if f not in left_out], left_out=left_out, notes=notes)


def _token() -> str:
    """The token huggingface_hub would send (HF_TOKEN, else the one `hf auth login` saved)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserInputError(f"no Hugging Face token found: {LOGIN_HINT}")
    return token


def _left_out(relative: str) -> bool:
    name = Path(relative).name
    return any(fnmatch.fnmatch(name, pattern) for pattern in LEFT_OUT) or \
        any(part.startswith(".") for part in Path(relative).parts)


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


__all__ = ["LEFT_OUT", "REPO_ID", "HubApi", "PushResult", "run_push"]
