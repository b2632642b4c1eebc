"""`rlhf tui` and `rlhf demo` open the console (the CLI's side of it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import console.cli as cli
from console.app import RlhfApp

from .conftest import fake_spec


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def test_tui_always_opens_the_console_and_demo_only_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli._wants_console(_args("tui"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli._wants_console(_args("demo"))
    for flags in (["--headless"], ["--json"], ["--detach"]):
        assert not cli._wants_console(_args("demo", *flags))
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)  # piped: print progress instead
    assert not cli._wants_console(_args("demo"))
    assert not cli._wants_console(_args("ls"))


def test_demo_submits_the_demo_then_opens_its_run_screen(live_engine, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    opened = {}

    def run(self: RlhfApp) -> None:  # instead of taking over the terminal
        opened["run"] = self.open_run_id

    monkeypatch.setattr(RlhfApp, "run", run)
    monkeypatch.setattr("console.demo.demo_spec", lambda: fake_spec(tmp_path, "demo", steps=1))
    assert cli.cmd_tui(live_engine, _args("demo")) == cli.EXIT_OK
    [demo] = live_engine.store.list_runs()
    assert demo.name == "demo" and opened["run"] == demo.id

    opened.clear()
    assert cli.cmd_tui(live_engine, _args("tui")) == cli.EXIT_OK
    assert opened == {"run": None} and len(live_engine.store.list_runs()) == 1


def test_rank_opens_the_rank_screen_on_the_named_batch(live_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = live_engine.store
    [prompt] = store.add_prompts([{"text": "Say hi."}])
    batch = store.create_sample_batch(name="answers", settings={}, sources=[])
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("hi", "hello")])
    assert cli._wants_console(_args("rank"))
    assert not cli._wants_console(_args("rank", "--auto", "demo"))
    assert not cli._wants_console(_args("rank", "--list"))

    opened = {}
    monkeypatch.setattr(RlhfApp, "run", lambda self: opened.update(rank=self.open_rank_on_start))
    assert cli.cmd_tui(live_engine, _args("rank", "--batch", "answers", "--annotator", "ann")) == cli.EXIT_OK
    assert opened["rank"] == (batch.id, "ann")


async def test_a_opens_the_batch_picker_then_the_rank_screen(live_engine) -> None:
    from console.screens.rank import RankScreen
    from console.screens.rank_batches import RankBatchesScreen

    store = live_engine.store
    [prompt] = store.add_prompts([{"text": "Say hi."}])
    batch = store.create_sample_batch(name="answers", settings={}, sources=[])
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("hi", "hello")])
    app = RlhfApp(live_engine, manage_gc=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, RankBatchesScreen)
        await pilot.press("enter")
        for _ in range(50):
            await pilot.pause(0.05)
            if isinstance(app.screen, RankScreen):
                break
        assert isinstance(app.screen, RankScreen)
