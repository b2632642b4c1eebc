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
    monkeypatch.setattr("engine.demo.pipeline.demo_spec", lambda **_: fake_spec(tmp_path, "demo", steps=1))
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


@pytest.mark.slow  # the judge runs as a real run process
async def test_J_hands_the_rest_of_the_batch_to_the_demo_judge(live_engine) -> None:
    import asyncio

    from console.screens.confirm import ConfirmScreen
    from console.screens.rank import RankScreen
    from engine.demo.task import generate_tasks

    store = live_engine.store
    tasks = generate_tasks(6, seed=2, split="heldout")
    prompts = store.add_prompts([{"text": t.prompt} for t in tasks])
    batch = store.create_sample_batch(name="answers", settings={}, sources=[])
    store.add_samples([{"prompt_id": p, "batch_id": batch.id, "response": r, "checkpoint": c}
                       for p, t in zip(prompts, tasks) for r, c in ((t.reference, "good"), ("no", "bad"))])
    app = RlhfApp(live_engine, manage_gc=False, open_rank=(batch.id, "ann"))
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if isinstance(app.screen, RankScreen) and app.screen.ready:
                break
        await pilot.press("1")  # one judgement by the person
        for _ in range(100):
            await pilot.pause(0.05)
            if store.feedback.progress(batch_id=batch.id).done == 1:
                break
        await pilot.press("J")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#yes")
        for _ in range(300):  # the judge runs as an engine job: a real run process
            await asyncio.sleep(0.1)
            if store.feedback.progress(batch_id=batch.id).done >= 4:
                break
    live = store.feedback.live_judgements(batch_ids=[batch.id])
    # 1 by the person; the item on screen and the one prefetched stay theirs; the judge took the other 3.
    assert sorted(j.annotator for j in live) == ["ann"] + ["judge:demo"] * 3


@pytest.mark.slow  # submits a real run
async def test_the_demo_console_opens_the_rank_screen_when_people_are_asked(live_engine) -> None:
    import asyncio

    from console.screens.rank import RankScreen
    from engine.runtime.jobs import rank_spec

    store = live_engine.store
    [prompt] = store.add_prompts([{"text": "Say hi."}])
    batch = store.create_sample_batch(name="answers", settings={}, sources=[])
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("hi", "hello")])
    run = await live_engine.submit(rank_spec(batch.id, judge=None))  # a rank stage that waits for people
    app = RlhfApp(live_engine, manage_gc=False, open_run=run.id, rank_when_asked=True)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(200):
            await asyncio.sleep(0.1)
            await pilot.pause()
            if isinstance(app.screen, RankScreen):
                break
        assert isinstance(app.screen, RankScreen) and app.screen.batch_id == batch.id
    await live_engine.cancel(run.id, wait=True)
