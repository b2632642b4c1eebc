"""Fixtures for stage tests: a real workspace, a real store, a real StageContext
(the `workspace` fixture is the shared one, in tests/conftest.py).

The environment is set at import, before any test module imports
transformers or datasets: nothing may reach the network, and no progress bar
may be drawn.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.spec.fields import StageSpec
from engine.stages.common.context import StageContext
from store import NewStage, Workspace

MakeContext = Callable[..., StageContext]


@pytest.fixture(scope="session")
def shared_cache(builtin_cache: Path) -> Path:
    """One cache for the session (tests/conftest.py): the corpus and tokenizer are built once."""
    return builtin_cache


class StopAtStep(StageContext):
    """A context whose cancel arrives once the stage reports `stop_at_step`,
    as if a person pressed cancel then (make_context(spec, stop_at_step=N))."""

    stop_at_step: int

    def set_progress(self, step: int, total: int | None = None) -> None:
        super().set_progress(step, total)
        if step >= self.stop_at_step:
            self.request_stop()


@pytest.fixture
def make_context(workspace: Workspace, shared_cache: Path) -> MakeContext:
    """`make_context(spec)` -> a StageContext for a new run's one stage;
    `make_context(spec, like=ctx, resume_from=...)` -> a fresh context for the
    same stage, as the engine builds when it resumes a run;
    `make_context(spec, stop_at_step=N)` -> one that is cancelled at step N."""

    def make(
        spec: StageSpec,
        *,
        like: StageContext | None = None,
        resume_from: Path | None = None,
        context_class: type[StageContext] = StageContext,
        stop_at_step: int | None = None,
    ) -> StageContext:
        if like is None:
            run = workspace.store.create_run(
                name="t", spec_text="", spec={}, spec_path=None,
                stages=[NewStage(name="pretrain", kind=spec.kind, position=0, parent=None, config={})],
            )
            run_id = run.id
            stage_id = workspace.store.list_stages(run_id=run_id)[0].id
        else:
            run_id, stage_id = like.run_id, like.stage_id
        if stop_at_step is not None:
            context_class = type("StopAtStep", (StopAtStep,), {"stop_at_step": stop_at_step})
        return context_class(
            store=workspace.store,
            run_id=run_id,
            stage_id=stage_id,
            stage_name="pretrain",
            spec=spec,
            output_dir=workspace.stage_dir(run_id, "pretrain"),
            cache_dir=shared_cache,
            stage_outputs={},
            resume_from=resume_from,
        )

    return make
