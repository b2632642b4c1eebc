"""Runs to test the store on; the `workspace` and `store` fixtures are the shared ones (tests/conftest.py)."""

from __future__ import annotations

import pytest

from store import NewStage, RunRead, Store


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
