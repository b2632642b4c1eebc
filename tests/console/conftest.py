"""Fixtures for the console's tests: a workspace of runs in every state, a
fixed clock, a fake system sampler, real fake-stage runs where a test
needs a live process (`live_engine`, on the shared `engine_env` and
`open_engine` of tests/conftest.py), and the environment of the `rlhf`
commands the CLI tests start (`cli_env`).

The fixture workspace is written row by row through the Store with fixed
times, so snapshots are the same on every machine. Its "running" and
"queued" runs have no process; the engine's liveness check gives such runs
30 seconds from their heartbeat before calling them crashed, which is far
longer than any test here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from console.sysinfo import GpuSnapshot, SystemSnapshot
from engine import Engine
from store import NewStage, RunStatus, StageStatus, Store, open_workspace, utcnow
from store.models import Checkpoint
from tests.support import fake_spec

from ..engine import fake_stage  # noqa: F401  registers kind "fake" in this process

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
HOSTILE = "[red]x[/red] [link=file:///etc/passwd]y[/link] \x1b[31mred\x1b[0m \x1b]0;title\x07 [bold]"


def fixed_clock() -> datetime:
    return NOW


class FakeSampler:
    """Fixed numbers: one GPU, half busy."""

    def __init__(self, gpus: int = 1) -> None:
        self.gpus = gpus
        self.calls = 0

    def sample(self) -> SystemSnapshot:
        self.calls += 1
        gib = 1024**3
        return SystemSnapshot(
            cpu_percent=42.0, cpu_count=2, memory_used=6 * gib, memory_total=16 * gib,
            gpus=tuple(
                GpuSnapshot(index=i, name="Fake GPU 80GB", utilization=55.0, memory_used=30 * gib,
                            memory_total=80 * gib)
                for i in range(self.gpus)
            ),
            gpu_source="fake",
        )


# --- the fixture workspace ----------------------------------------------------------


def _config(**overrides: Any) -> dict[str, Any]:
    config = {
        "kind": "pretrain", "from": "builtin:llama-4m", "tokenizer": "builtin:bpe-4k",
        "data": "builtin:stdlib-docs", "block_size": 128, "batch_size": 8, "max_steps": 300,
        "learning_rate": 0.002, "warmup_steps": 20, "eval_every": 50, "save_every": 100,
    }
    config.update(overrides)
    return config


def _loss(step: int, scale: float = 1.0) -> float:
    return 2.0 + 6.5 * math.exp(-step / (60 * scale)) + 0.15 * math.sin(step / 3.0)


class FixtureWorkspace:
    """Runs in every state, with metrics, logs and checkpoints at fixed times."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ids: dict[str, int] = {}

    def build(self) -> FixtureWorkspace:
        workspace = open_workspace(self.root)
        try:
            store = workspace.store
            self._succeeded(store)
            self._failed(store)
            self._crashed(store)
            self._cancelled(store)
            self._literal(store)
            self._running(store)
            self._queued(store)
        finally:
            workspace.close()
        return self

    # one method per run, oldest first

    def _run(self, store: Store, name: str, stages: list[tuple[str, dict[str, Any]]], created: datetime,
             description: str = "fixture run") -> tuple[int, list[int]]:
        spec_stages = {stage: config for stage, config in stages}
        run = store.create_run(
            name=name, spec_text=f'name = "{name}"\n', spec={"name": name, "description": description,
                                                            "stages": spec_stages},
            spec_path=f"specs/{name}.toml",
            stages=[NewStage(name=s, kind=c["kind"], position=i, parent=None, config=c)
                    for i, (s, c) in enumerate(stages)],
        )
        store.update_run(run.id, created_at=created)
        self.ids[name] = run.id
        return run.id, [s.id for s in store.list_stages(run_id=run.id)]

    def _metrics(self, store: Store, run_id: int, stage_id: int, last_step: int, start: datetime,
                 seconds_per_step: float = 2.0, scale: float = 1.0, evals: bool = True) -> None:
        t0 = start.timestamp()
        points = []
        for step in range(1, last_step + 1):
            wall = t0 + step * seconds_per_step
            points.append(dict(run_id=run_id, stage_id=stage_id, key="train/loss", step=step,
                               value=_loss(step, scale), wall_time=wall))
            points.append(dict(run_id=run_id, stage_id=stage_id, key="train/learning_rate", step=step,
                               value=0.002 * min(1.0, step / 20), wall_time=wall))
            if evals and step % 50 == 0:
                eval_loss = _loss(step, scale) + 0.3
                points.append(dict(run_id=run_id, stage_id=stage_id, key="eval/loss", step=step,
                                   value=eval_loss, wall_time=wall))
                points.append(dict(run_id=run_id, stage_id=stage_id, key="eval/perplexity", step=step,
                                   value=math.exp(eval_loss), wall_time=wall))
        store.add_metrics(points)

    def _logs(self, store: Store, run_id: int, stage_id: int, start: datetime, messages: list[str]) -> None:
        store.add_logs([
            dict(run_id=run_id, stage_id=stage_id, stream="stdout", level="info", message=m,
                 time=start + timedelta(seconds=i))
            for i, m in enumerate(messages)
        ])

    def _samples(self, store: Store, run_id: int, stage_id: int, rows: list[tuple[str, str]], *,
                 step: int | None = None, batch: str | None = None) -> None:
        """(prompt, response) rows, taken at a training step or as a named batch."""
        prompt_ids = store.add_prompts([{"text": prompt, "source": "fixture"} for prompt, _ in rows])
        batch_id = None
        if batch is not None:
            batch_id = store.create_sample_batch(name=batch, settings={"temperature": 0.7}, sources=["final"],
                                                 run_id=run_id, stage_id=stage_id).id
        checkpoint = str(self.root / "runs" / f"{run_id:05d}" / "checkpoints" / f"checkpoint-{step or 0}")
        store.add_samples([
            {"prompt_id": prompt_id, "response": response, "run_id": run_id, "stage_id": stage_id, "step": step,
             "batch_id": batch_id, "checkpoint": checkpoint, "meta": {"tokens": len(response.split()), "ended": True}}
            for prompt_id, (_, response) in zip(prompt_ids, rows)
        ])

    def _checkpoint(self, store: Store, run_id: int, stage_id: int, step: int, at: datetime,
                    final: bool = False) -> None:
        # Through the table model, to give it a fixed time (add_checkpoint stamps now).
        path = self.root / "runs" / f"{run_id:05d}" / "pretrain" / (
            "final" if final else f"checkpoints/checkpoint-{step}")
        with Session(store.engine) as session:
            session.add(Checkpoint(run_id=run_id, stage_id=stage_id, step=step, path=str(path),
                                   created_at=at, is_final=final))
            session.commit()

    def _finish(self, store: Store, run_id: int, stage_ids: list[int], status: RunStatus,
                stage_states: list[tuple[StageStatus, int, int]], started: datetime, finished: datetime | None,
                error: str | None = None) -> None:
        store.update_run(run_id, status=status, started_at=started, finished_at=finished, error=error,
                         heartbeat_at=utcnow())
        for stage_id, (stage_status, step, total) in zip(stage_ids, stage_states):
            store.update_stage(
                stage_id, status=stage_status, step=step, total=total, device="cpu",
                started_at=started if stage_status != StageStatus.PENDING else None,
                finished_at=finished if stage_status.is_finished else None,
                error=error if stage_status in (StageStatus.FAILED, StageStatus.CRASHED) else None,
            )

    def _succeeded(self, store: Store) -> None:
        created = NOW - timedelta(hours=3)
        run_id, (stage,) = self._run(store, "baseline", [("pretrain", _config())], created)
        self._metrics(store, run_id, stage, 300, created)
        self._logs(store, run_id, stage, created, ["loading builtin:stdlib-docs", "tokenizer ready (4096 tokens)",
                                                   "training 300 steps", "saved final model"])
        for step in (200, 300):
            self._checkpoint(store, run_id, stage, step, created + timedelta(seconds=2 * step))
        self._checkpoint(store, run_id, stage, 300, created + timedelta(seconds=605), final=True)
        self._samples(store, run_id, stage, [("Write a haiku about loss.", "Loss falls like snow / ..."),
                                             ("Name a prime.", "Seven.")], batch="baseline/sample")
        self._finish(store, run_id, [stage], RunStatus.SUCCEEDED, [(StageStatus.SUCCEEDED, 300, 300)],
                     created, created + timedelta(seconds=610))

    def _failed(self, store: Store) -> None:
        created = NOW - timedelta(hours=2)
        run_id, (stage,) = self._run(store, "lr-high", [("pretrain", _config(learning_rate=0.02))], created)
        self._metrics(store, run_id, stage, 120, created, scale=2.0)
        self._logs(store, run_id, stage, created, ["training 300 steps", "loss is nan at step 121"])
        self._finish(store, run_id, [stage], RunStatus.FAILED, [(StageStatus.FAILED, 120, 300)],
                     created, created + timedelta(seconds=250), error="loss became nan at step 121")

    def _crashed(self, store: Store) -> None:
        created = NOW - timedelta(minutes=90)
        run_id, (stage,) = self._run(store, "box-reboot", [("pretrain", _config(batch_size=16))], created)
        self._metrics(store, run_id, stage, 60, created, evals=True)
        self._finish(store, run_id, [stage], RunStatus.CRASHED, [(StageStatus.CRASHED, 60, 300)],
                     created, created + timedelta(seconds=130), error="its run process (pid 4242) died")

    def _cancelled(self, store: Store) -> None:
        created = NOW - timedelta(minutes=60)
        run_id, (stage,) = self._run(store, "stopped-early", [("pretrain", _config())], created)
        self._metrics(store, run_id, stage, 80, created)
        self._checkpoint(store, run_id, stage, 80, created + timedelta(seconds=165))
        self._finish(store, run_id, [stage], RunStatus.CANCELLED, [(StageStatus.CANCELLED, 80, 300)],
                     created, created + timedelta(seconds=170), error="stopped at step 80")

    def _literal(self, store: Store) -> None:
        created = NOW - timedelta(minutes=40)
        run_id, (stage,) = self._run(
            store, "literal", [("pretrain", _config(data=HOSTILE))], created, description=HOSTILE)
        self._metrics(store, run_id, stage, 20, created, evals=False)
        self._logs(store, run_id, stage, created, [f"model says: {HOSTILE}", "two\nlines", "\x1b[2J\x1b[H"])
        self._samples(store, run_id, stage, [("[b]Q:[/b] what is 2+2?", f"four {HOSTILE}")], step=20)
        self._finish(store, run_id, [stage], RunStatus.FAILED, [(StageStatus.FAILED, 20, 300)],
                     created, created + timedelta(seconds=45), error=f"bad data: {HOSTILE}")

    def _running(self, store: Store) -> None:
        created = NOW - timedelta(minutes=20)
        run_id, (first, second) = self._run(
            store, "two-stage", [("pretrain", _config(max_steps=200)),
                                 ("more", _config(**{"from": "stage:pretrain", "max_steps": 400}))], created)
        self._metrics(store, run_id, first, 200, created, seconds_per_step=1.5)
        second_start = created + timedelta(seconds=310)
        self._metrics(store, run_id, second, 150, second_start, seconds_per_step=2.0, scale=3.0)
        self._checkpoint(store, run_id, first, 200, created + timedelta(seconds=305), final=True)
        self._logs(store, run_id, second, second_start, ["resuming from pretrain/final", "step 150/400"])
        for step in (50, 100, 150):
            self._samples(store, run_id, second, [("Say hello.", f"hello at step {step}"),
                                                  ("Count to three.", "one two" + " three" * (step // 100))],
                          step=step)
        store.update_run(run_id, status=RunStatus.RUNNING, started_at=created, heartbeat_at=utcnow())
        store.update_stage(first, status=StageStatus.SUCCEEDED, step=200, total=200, device="cpu",
                           started_at=created, finished_at=created + timedelta(seconds=305))
        store.update_stage(second, status=StageStatus.RUNNING, step=150, total=400, device="cpu",
                           started_at=second_start)

    def _queued(self, store: Store) -> None:
        created = NOW - timedelta(minutes=5)
        run_id, _ = self._run(store, "waiting-turn", [("pretrain", _config())], created)
        store.update_run(run_id, heartbeat_at=utcnow())


@pytest.fixture
def fixture_ws(tmp_path: Path) -> FixtureWorkspace:
    """The fixture workspace, built fresh (about 0.1 s) so its live runs' heartbeats are new."""
    return FixtureWorkspace(tmp_path / "ws").build()


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Snapshots are taken in colour; a developer's NO_COLOR must not change them.
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def engine_cpu_slots() -> int:
    """The console's live runs never wait for a CPU slot (the shared `engine_env` gives 1)."""
    return 4


@pytest.fixture
def fixture_engine(fixture_ws: FixtureWorkspace) -> Iterator[Engine]:
    engine = Engine(fixture_ws.root)
    yield engine
    engine.close()


@pytest.fixture
def live_engine(tmp_path: Path, engine_env: None, open_engine: Callable[[Path], Engine]) -> Engine:
    """An empty workspace for real fake-stage runs; every process is killed afterwards."""
    return open_engine(tmp_path / "live")


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an `rlhf` command a test starts: the workspace tmp_path/ws, runs on the
    CPU, nothing from the network, and 200 columns (rich wraps what it prints at the terminal's width)."""
    return {**os.environ, "RLHF_WORKSPACE": str(tmp_path / "ws"), "RLHF_DEVICES": "cpu",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}


def make_app(engine: Engine, **kwargs: Any):
    from console.app import RlhfApp

    kwargs.setdefault("sampler", FakeSampler())
    kwargs.setdefault("clock", fixed_clock)
    kwargs.setdefault("poll_seconds", 1.0)  # tests ask for refreshes (next_refresh) when they need one
    kwargs.setdefault("workspace_label", "fixture-ws")
    kwargs.setdefault("manage_gc", False)  # a full collection of pytest's heap per app is slow; tested once
    app = RlhfApp(engine, **kwargs)
    app.animation_level = "none"  # tab underlines would otherwise animate on every switch
    return app


def screen_text(app: Any) -> str:
    """What the terminal shows now, as plain text (one line per row)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def screen_segments(app: Any) -> list[Any]:
    return [segment for strip in app.screen._compositor.render_strips() for segment in strip]


async def wait_until(screen: Any, condition: Any, *, refreshes: int = 150) -> None:
    """Wait for the screen's own timed refreshes (never a sleep) until `condition()` holds."""
    for _ in range(refreshes):
        if condition():
            return
        await screen.next_refresh(now=False)
    assert condition(), f"condition not met after {refreshes} refreshes"


__all__ = ["HOSTILE", "NOW", "FakeSampler", "FixtureWorkspace", "fake_spec", "fixed_clock", "make_app",
           "screen_segments", "screen_text", "wait_until"]
