from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import NewStage, RunRead, Store, Workspace, open_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = open_workspace(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def store(workspace: Workspace) -> Store:
    return workspace.store


def new_run(store: Store, name: str = "tiny", stages: tuple[str, ...] = ("pretrain",)) -> RunRead:
    """A queued run whose stages form a chain, each starting from the one before."""
    return store.create_run(
        name=name,
        spec_text="[stages.pretrain]\nkind = \"pretrain\"\n",
        spec={s: {"kind": "pretrain", "max_steps": 10} for s in stages},
        spec_path="/specs/pipeline.toml",
        stages=[
            NewStage(name=s, kind="pretrain", position=i, parent=stages[i - 1] if i else None,
                     config={"kind": "pretrain", "max_steps": 10 * (i + 1)})
            for i, s in enumerate(stages)
        ],
    )


@pytest.fixture
def make_run(store: Store):
    def make(name: str = "tiny", stages: tuple[str, ...] = ("pretrain",)) -> RunRead:
        return new_run(store, name, stages)

    return make
