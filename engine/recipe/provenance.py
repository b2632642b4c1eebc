"""Where a trained model came from: the record every stage writes beside its `config.json`.

    {"format": 1, "written_by": "rlhf-console",
     "run": {"id": 3, "name": "demo"}, "stage": {"id": 9, "name": "sft", "kind": "sft"},
     "source": {"kind": "hub", "id": "Qwen/Qwen2.5-0.5B", "revision": "060db6499f32faf8b98477b0a26969ef7d8b9987"}}

`source` is the model the stage started from: a hub id with the commit it
resolved to, a built-in preset (a random init), or a local folder; a folder
that is itself one of our checkpoints carries its own record, copied under
`recorded`, so the chain back to the hub model (or the preset) travels with
the weights, also when the folder is exported or pushed elsewhere.

The file is JSON (`rlhf_provenance.json`): plain transformers ignores it, so
the folder still loads with `from_pretrained`; nothing is ever pickled.
Torch-free: the stages write it, the model card and `rlhf push` read it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PROVENANCE_FILE = "rlhf_provenance.json"
FORMAT = 1
#: how deep a chain of records is followed (a folder trained from itself cannot loop forever)
MAX_DEPTH = 32

#: each repo's answer, asked once per process (None too: a save must record what the load used)
_commits: dict[str, str | None] = {}
_commits_lock = threading.Lock()


def hub_commit(repo_id: str) -> str | None:
    """The commit the default branch of the hub model `repo_id` resolves to,
    as transformers resolves it when it loads (online: asked of the hub;
    HF_HUB_OFFLINE: the cache's refs/main), or None when it cannot be told.

    transformers 5 no longer keeps the commit on the loaded config
    (`config._commit_hash` is gone), so the stage resolves it itself, loads
    that commit, and records the same answer: a process asks once per repo
    (a later save must not see a branch that moved meanwhile)."""
    with _commits_lock:
        if repo_id in _commits:
            return _commits[repo_id]
    from huggingface_hub import HfApi, constants

    try:
        commit = getattr(HfApi().resolve_revision(repo_id, local_files_only=constants.HF_HUB_OFFLINE), "resolved", None)
    # Not found or gated (HTTP errors are OSErrors), no network and nothing cached, a timeout (the HTTP client's
    # own error, not an OSError): the load itself says why, and saving a trained model must not fail on it.
    except Exception:  # noqa: BLE001
        commit = None
    with _commits_lock:
        # An unresolved repo stays unresolved in this process: the load used the branch as it was then, and
        # a save that asked again could record a commit the branch moved to meanwhile (or fail on the network).
        return _commits.setdefault(repo_id, commit if isinstance(commit, str) and commit else None)


def source_record(kind: str, value: str, *, revision: str | None = None) -> dict[str, Any]:
    """The record of a stage's source model: `kind` hub, path or builtin, as
    a resolved reference names it. A folder's own record is copied in."""
    if kind == "hub":
        return {"kind": "hub", "id": value, "revision": revision}
    if kind == "path":
        record: dict[str, Any] = {"kind": "path", "path": value}
        recorded = read_provenance(Path(value))
        if recorded is not None:
            record["recorded"] = recorded
        return record
    return {"kind": kind, "name": value}


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """The record in `folder`, or None: none there, or not a record of ours
    (a damaged file is treated as none rather than failing an upload)."""
    try:
        data = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "rlhf-console" else None


def write_provenance(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write `record` into `folder`, through a temporary file renamed into
    place (a crash leaves the old file or the new one, never half of one)."""
    target = folder / PROVENANCE_FILE
    tmp = folder / f".{PROVENANCE_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(dict(record), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def chain(record: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    """`record`, then the record of the folder it started from, and so on
    back to the first one whose source is not one of our checkpoints."""
    depth = 0
    while isinstance(record, Mapping) and depth < MAX_DEPTH:
        yield record
        source = record.get("source")
        record = source.get("recorded") if isinstance(source, Mapping) else None
        depth += 1


def root_source(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Where the chain started: the hub model (with its revision), the preset,
    or a folder that is not one of ours. None without a record."""
    last = None
    for link in chain(record):
        last = link.get("source")
    return last if isinstance(last, Mapping) else None


def describe_source(source: Mapping[str, Any] | None) -> str:
    """One line for people: `hub:ORG/NAME@COMMIT`, `builtin:NAME`, a folder."""
    if not source:
        return "unknown"
    kind = source.get("kind")
    if kind == "hub":
        revision = source.get("revision")
        return f"hub:{source.get('id')}" + (f"@{revision}" if revision else " (revision not resolved)")
    if kind == "path":
        return str(source.get("path"))
    return f"{kind}:{source.get('name')}"


__all__ = ["PROVENANCE_FILE", "chain", "describe_source", "hub_commit", "read_provenance", "root_source",
           "source_record", "write_provenance"]
