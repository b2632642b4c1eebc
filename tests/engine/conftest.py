from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from engine import Engine, PipelineSpec, parse_spec
from engine.runtime.liveness import process_tree, signal_tree

from . import fake_stage  # noqa: F401  registers kind "fake" in this process


@pytest.fixture
def engine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Child processes (supervisor, workers) inherit these.
    monkeypatch.setenv("RLHF_STAGE_PLUGINS", "tests.engine.fake_stage")
    monkeypatch.setenv("RLHF_DEVICES", "cpu")
    monkeypatch.setenv("RLHF_CPU_SLOTS", "1")
    monkeypatch.setenv("RLHF_CANCEL_GRACE", "10")


@pytest.fixture
def engine(tmp_path: Path, engine_env: None):
    eng = Engine(tmp_path / "ws")
    yield eng
    # Never leave processes behind, whatever the test did.
    for run in eng.store.list_runs():
        if run.pid:
            signal_tree(process_tree(run.pid), signal.SIGKILL)
    eng.close()


def fake_pipeline(tmp_path: Path, name: str = "fake", **fields: object) -> PipelineSpec:
    """A one-stage pipeline of the fake kind."""
    lines = "\n".join(
        f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}" for k, v in fields.items()
    )
    text = textwrap.dedent(f"""\
        name = "{name}"
        [stages.work]
        kind = "fake"
        """) + lines + "\n"
    return parse_spec(text, source=f"{name}.toml", base_dir=tmp_path)
