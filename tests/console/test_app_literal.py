"""Untrusted text (log lines, model output, config values, errors, run names)
is shown exactly as written: Rich markup is never parsed, escape sequences are
made visible, nothing becomes a link or a colour."""

from __future__ import annotations

from datetime import timedelta

import pytest

from console.screens.run import RunScreen
from console.widgets.runs_table import RunsTable
from store import NewStage

from .conftest import NOW, make_app, screen_segments, screen_text

pytestmark = pytest.mark.timeout(60)


def _assert_literal(app, text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text  # the terminal is never told to do anything
    for segment in screen_segments(app):
        style = segment.style
        assert style is None or not style.link, f"a link was made from {segment.text!r}"


async def test_a_hostile_run_is_shown_literally_everywhere(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await app.screen.next_refresh()
        app.open_run(fixture_ws.ids["literal"], tab="log")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await screen.next_refresh()
        await pilot.pause()
        text = screen_text(app)
        # the log, the header's error line
        assert (
            "model says: [red]x[/red] [link=file:///etc/passwd]y[/link] \\e[31mred\\e[0m \\e]0;title\\x07 [bold]"
            in text
        )
        assert "bad data: [red]x[/red] [link=file:///etc/passwd]y[/link]" in text
        assert "\\e[2J\\e[H" in text
        _assert_literal(app, text)

        await pilot.press("4")  # the config: a data path and a description full of markup
        await pilot.pause()
        text = screen_text(app)
        assert 'data = "[red]x[/red] [link=file:///etc/passwd]y[/link] \\u001b[31mred' in text
        _assert_literal(app, text)

        # samples: the prompt and what the model wrote
        await pilot.press("6")
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = screen_text(app)
        assert "pretrain · step 20" in text and "[b]Q:[/b] what is 2+2?" in text
        assert "four [red]x[/red] [link=file:///etc/passwd]y[/link] \\e[31mred\\e[0m" in text
        _assert_literal(app, text)


async def test_a_run_name_with_markup_stays_literal(fixture_engine, fixture_ws) -> None:
    # `rlhf run --name` is not held to the spec's name rules: names are untrusted too.
    store = fixture_engine.store
    run = store.create_run(name="[b]bold[/b]\x1b[31m", spec_text="", spec={}, spec_path=None,
                           stages=[NewStage(name="s[i]x[/i]", kind="pretrain", position=0, parent=None, config={})])
    store.update_run(run.id, created_at=NOW - timedelta(minutes=1), status="failed", error="[u]boom[/u]")
    app = make_app(fixture_engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await app.screen.next_refresh()
        await pilot.pause()
        text = screen_text(app)
        assert "[b]bold[/b]\\e[31m" in text and "s[i]x[/i]" in text
        _assert_literal(app, text)
        table = app.query_one(RunsTable)
        table.move_cursor(row=table.get_row_index(str(run.id)))
        await pilot.press("enter")
        await app.screen.next_refresh()
        await pilot.pause()
        text = screen_text(app)
        assert "[b]bold[/b]\\e[31m" in text and "[u]boom[/u]" in text
        _assert_literal(app, text)
        await pilot.press("escape", "colon", *"bold")
        await pilot.pause(0.3)  # the palette searches in a worker of its own
        text = screen_text(app)
        assert "[b]bold[/b]" in text
        _assert_literal(app, text)
