"""The plain-sqlite3 runs list (`store.reads`) agrees with the ORM's reads, field for field."""

from __future__ import annotations

import subprocess
import sys

from store import NewStage, RunStatus, StageStatus, Store, Workspace, open_workspace, reads, utcnow
from store.reads import RunListing, StageListing


def test_the_plain_runs_list_reads_what_the_orm_reads(workspace: Workspace) -> None:
    store: Store = workspace.store
    for name in ("first", "second"):
        store.create_run(name=name, spec_text="", spec={}, spec_path=None, stages=[
            NewStage("sft", "sft", 0, None, {"a": 1}), NewStage("ppo", "ppo", 1, "sft", {}),
        ])
    first = store.get_run("first")
    sft = store.list_stages(run_id=first.id)[0]
    store.update_stage(sft.id, status=StageStatus.RUNNING, step=3, total=10, started_at=utcnow())
    store.update_run(first.id, status=RunStatus.RUNNING, pid=123, host="h", heartbeat_at=utcnow(), error="e")

    listed = reads.list_runs(workspace.db_path)
    assert [r.name for r in listed] == [r.name for r in store.list_runs()] == ["second", "first"]
    for listing, run in zip(listed, store.list_runs()):
        assert listing == RunListing(**{f: getattr(run, f) for f in RunListing.__dataclass_fields__})
    assert [r.name for r in reads.list_runs(workspace.db_path, statuses=[RunStatus.RUNNING])] == ["first"]

    stages = reads.list_stages(workspace.db_path, run_ids=[r.id for r in listed])
    for run in store.list_runs():
        assert stages[run.id] == [
            StageListing(**{f: getattr(s, f) for f in StageListing.__dataclass_fields__})
            for s in store.list_stages(run_id=run.id)
        ]


def test_opening_a_current_workspace_and_listing_its_runs_needs_no_sqlalchemy(workspace: Workspace) -> None:
    workspace.store.create_run(name="r", spec_text="", spec={}, spec_path=None, stages=[])
    code = (
        "import sys, store, store.reads\n"
        f"ws = store.open_workspace({str(workspace.root)!r}, create=False)\n"
        "assert [r.name for r in store.reads.list_runs(ws.db_path)] == ['r']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel', 'alembic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_workspace_opened_without_the_orm_makes_its_store_when_asked(workspace: Workspace) -> None:
    workspace.store.create_run(name="r", spec_text="", spec={}, spec_path=None, stages=[])
    reopened = open_workspace(workspace.root, create=False)
    try:
        assert [r.name for r in reopened.store.list_runs()] == ["r"]
    finally:
        reopened.close()
