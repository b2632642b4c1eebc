"""Pilot tests of every screen and binding, against the fixture workspace
(a succeeded, failed, crashed, cancelled, running and queued run)."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette

from console.screens.compare import CompareScreen
from console.screens.confirm import ConfirmScreen
from console.screens.keys import KeysScreen
from console.screens.run import RunScreen
from console.screens.runs import RunsScreen
from console.widgets.chart import LineChart
from console.widgets.checkpoints_table import CheckpointsTable
from console.widgets.config_diff import ConfigDiff
from console.widgets.log_view import LogView
from console.widgets.metric_picker import MetricPicker
from console.widgets.metrics_table import MetricsTable
from console.widgets.runs_table import RunsTable
from console.widgets.system_panel import SystemPanel

from .conftest import make_app, screen_text

pytestmark = pytest.mark.timeout(60)


async def shown(pilot) -> str:
    """The screen as text, once what the last key changed is painted."""
    await pilot.pause()
    return screen_text(pilot.app)


async def _runs(app, pilot):
    screen = app.screen
    assert isinstance(screen, RunsScreen)
    await screen.next_refresh()
    await pilot.pause()
    return screen, app.query_one(RunsTable)


async def _open(app, pilot, table: RunsTable, run_id: int) -> RunScreen:
    table.move_cursor(row=table.get_row_index(str(run_id)))
    await pilot.press("enter")
    screen = app.screen
    assert isinstance(screen, RunScreen) and screen.run_id == run_id
    await screen.next_refresh()
    await pilot.pause()
    return screen


async def test_the_runs_screen_shows_every_run_with_its_state(fixture_engine) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        assert table.row_count == 7
        text = await shown(pilot)
        for fragment in ("✓ succeeded", "✗ failed", "! crashed", "⊘ cancelled", "● running", "◌ queued",
                         "two-stage", "8m", "38%", "CPU", "GPU0", "Fake GPU"):
            assert fragment in text, fragment
        assert app.focused is table


async def test_slash_filters_as_you_type_and_esc_clears(fixture_engine) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, table = await _runs(app, pilot)
        await pilot.press("slash", "f", "a", "i", "l")
        assert table.row_count == 2  # lr-high and literal
        await pilot.press("backspace", "backspace", "backspace", "backspace", *"reboot")
        assert table.row_count == 1 and table.current_row.name == "box-reboot"
        await pilot.press("enter")  # keeps the filter, back in the table
        assert app.focused is table and table.row_count == 1
        await pilot.press("escape")
        assert table.row_count == 7 and not screen.query_one("#filter").display
        await pilot.press("slash", *"zzz")
        assert table.row_count == 0 and "No run matches" in await shown(pilot)


async def test_space_marks_runs_and_c_compares_them(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        table.move_cursor(row=table.get_row_index(str(fixture_ws.ids["lr-high"])))
        await pilot.press("space")  # marks and moves down
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)  # one run is not a comparison
        assert any("at least two" in n.message for n in app._notifications)
        table.move_cursor(row=table.get_row_index(str(fixture_ws.ids["baseline"])))
        await pilot.press("space")
        assert table.marked == {fixture_ws.ids["lr-high"], fixture_ws.ids["baseline"]}
        await pilot.press("c")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await screen.next_refresh()
        await pilot.pause()
        chart = screen.query_one(LineChart)
        assert [line.label for line in chart.lines] == [
            f"#{fixture_ws.ids['baseline']}", f"#{fixture_ws.ids['lr-high']}"
        ]
        assert all(line.values for line in chart.lines)
        assert screen.metric == ("pretrain", "train/loss")
        diff = screen.query_one(ConfigDiff)
        keys = [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)]
        assert keys == ["pretrain.learning_rate"]  # only what differs
        await pilot.press("j")  # another metric
        assert screen.metric != ("pretrain", "train/loss")
        await pilot.press("l", "s", "w")
        assert chart.log_scale and chart.smoothing == 0.6 and chart.wall_time
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("escape")  # clears the marks
        assert table.marked == set()


async def test_enter_opens_a_run_with_its_pipeline_charts_and_tabs(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        screen = await _open(app, pilot, table, fixture_ws.ids["two-stage"])
        text = await shown(pilot)
        assert "✓ pretrain 200/200" in text and "● more (pretrain) 150/400" in text and "ETA 8m" in text

        chart = screen.query_one(LineChart)
        assert [line.label for line in chart.lines] == ["train/loss", "eval/loss"]  # together, of the running stage
        assert "more: loss" in await shown(pilot)
        await pilot.press("l")
        assert chart.log_scale
        await pilot.press("s", "s")
        assert chart.smoothing == 0.9
        await pilot.press("w")
        assert chart.wall_time and "x: time" in await shown(pilot)
        await pilot.press("j")  # the picker has focus: next metric group
        assert [line.label for line in chart.lines] == ["eval/perplexity"]

        await pilot.press("2")
        assert screen.active_tab == "metrics"
        metrics = screen.query_one(MetricsTable)
        assert metrics.row_count == 8
        row = [str(c) for c in metrics.get_row(f"{screen.model.detail.stages[1].id}:train/loss")]
        assert row[:2] == ["more", "train/loss"] and row[5] == "150"
        await pilot.press("3")
        assert screen.active_tab == "log"
        assert "resuming from pretrain/final" in await shown(pilot)
        await pilot.press("right_square_bracket")
        assert screen.active_tab == "config" and "[stages.more]" in await shown(pilot)
        await pilot.press("right_square_bracket")
        assert screen.active_tab == "checkpoints"
        assert "runs/00006/pretrain/final" in await shown(pilot)
        await pilot.press("right_square_bracket")
        await app.workers.wait_for_complete()
        text = await shown(pilot)
        assert screen.active_tab == "samples" and "more · step 150" in text and "hello at step 150" in text
        await pilot.press("j")  # an older step
        await app.workers.wait_for_complete()
        assert "hello at step 100" in await shown(pilot)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert screen.active_tab == "config"
        await pilot.press("1")
        assert screen.active_tab == "charts"
        await pilot.pause()
        focused = app.focused
        await pilot.press("tab")
        assert app.focused is not focused
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_every_state_opens(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        for name, fragment in (("baseline", "✓ succeeded"), ("lr-high", "loss became nan"),
                               ("box-reboot", "pid 4242"), ("stopped-early", "⊘ cancelled"),
                               ("waiting-turn", "no metrics logged yet")):
            screen = await _open(app, pilot, table, fixture_ws.ids[name])
            assert fragment in await shown(pilot), name
            await pilot.press("escape")
        screen = await _open(app, pilot, table, fixture_ws.ids["stopped-early"])
        await pilot.press("6")
        assert "No samples yet" in await shown(pilot)
        await pilot.press("escape")
        screen = await _open(app, pilot, table, fixture_ws.ids["baseline"])
        await pilot.press("6")
        await app.workers.wait_for_complete()
        assert "pretrain · baseline/sample" in await shown(pilot) and "Loss falls like snow" in await shown(pilot)
        await pilot.press("5")
        checkpoints = screen.query_one(CheckpointsTable)
        assert [str(checkpoints.get_row_at(i)[2]) for i in range(checkpoints.row_count)] == [
            "resumable", "resumable", "final"]


async def test_question_mark_shows_the_keys_of_the_current_screen(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, KeysScreen)
        text = await shown(pilot)
        assert "Keys: runs" in text and "filter runs as you type" in text and "quit; runs keep going" in text
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await _open(app, pilot, table, fixture_ws.ids["baseline"])
        await pilot.press("question_mark")
        text = await shown(pilot)
        assert "Keys: run" in text and "log scale" in text and "Samples tab" in text
        await pilot.press("question_mark")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("question_mark", "q")  # q closes the list; it does not quit from here
        assert isinstance(app.screen, RunScreen) and app.is_running


async def test_the_command_palette_opens_runs(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await _runs(app, pilot)
        await pilot.press("ctrl+p")
        assert CommandPalette.is_open(app)
        await pilot.press("escape")
        assert not CommandPalette.is_open(app)
        await pilot.press("colon")
        assert CommandPalette.is_open(app)
        await pilot.press(*"open run #1")
        await pilot.pause(0.3)  # the palette searches in a worker of its own
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == fixture_ws.ids["baseline"]


async def test_s_toggles_the_system_panel(fixture_engine) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _ = await _runs(app, pilot)
        panel = screen.query_one(SystemPanel)
        assert panel.display and "42% of 2 cores" in await shown(pilot) and "30.0 GiB / 80.0 GiB" in await shown(pilot)
        await pilot.press("s")
        assert not panel.display and "CPU" not in await shown(pilot)
        await pilot.press("s")
        assert panel.display


async def test_engine_errors_become_notifications_not_crashes(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        table.move_cursor(row=table.get_row_index(str(fixture_ws.ids["baseline"])))
        await pilot.press("r")  # a succeeded run cannot be resumed
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert any("nothing to resume" in n.message and n.severity == "error" for n in app._notifications)
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert any("only queued or running runs can be cancelled" in n.message for n in app._notifications)

        app.open_run(999)
        await pilot.pause()
        await app.screen.next_refresh()
        assert any("999" in n.message for n in app._notifications)
        assert app.is_running


async def test_an_unexpected_error_in_a_refresh_is_shown_once(fixture_engine, monkeypatch) -> None:
    from console.view_models import RunsModel

    async def broken(self, **kwargs):
        raise RuntimeError("disk on fire")

    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _ = await _runs(app, pilot)
        monkeypatch.setattr(RunsModel, "refresh", broken)
        await screen.next_refresh()
        await screen.next_refresh()
        messages = [n.message for n in app._notifications if "disk on fire" in n.message]
        assert len(messages) == 1 and app.is_running


async def test_the_confirmation_defaults_to_no(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        table.move_cursor(row=table.get_row_index(str(fixture_ws.ids["two-stage"])))
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Cancel run #6 two-stage?" in await shown(pilot)
        await pilot.press("enter")  # the focused button is "Keep running"
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("x", "escape")
        assert isinstance(app.screen, RunsScreen)
        assert (await fixture_engine.get_run(fixture_ws.ids["two-stage"])).cancel_requested is False


async def test_n_opens_the_launch_form_and_esc_leaves_it(fixture_engine) -> None:
    from console.screens.launch import LaunchScreen

    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await _runs(app, pilot)
        await pilot.press("n")
        assert isinstance(app.screen, LaunchScreen)
        assert "pretrain.from" in await shown(pilot)  # the demo template's main fields
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        assert len(fixture_engine.store.list_runs()) == 7  # nothing started


async def test_q_quits(fixture_engine) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await _runs(app, pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_the_console_fits_80x24_and_reads_without_colour(fixture_engine, fixture_ws, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.no_color
        _, table = await _runs(app, pilot)
        text = await shown(pilot)
        assert all(len(line) <= 80 for line in text.splitlines()) and len(text.splitlines()) == 24
        for symbol in ("✓", "✗", "!", "⊘", "●", "◌"):  # status reads without colour
            assert symbol in text
        await _open(app, pilot, table, fixture_ws.ids["two-stage"])
        assert "╍╍ eval/loss" in await shown(pilot)  # the second line is dashed


async def test_the_picker_follows_new_metric_keys(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        screen = await _open(app, pilot, table, fixture_ws.ids["two-stage"])
        picker = screen.query_one("#picker", MetricPicker)
        count = picker.option_count
        run_id = fixture_ws.ids["two-stage"]
        stage = screen.model.detail.stages[1]
        fixture_engine.store.add_metrics([dict(run_id=run_id, stage_id=stage.id, key="ppo/kl", step=151,
                                               value=0.1, wall_time=0.0)])
        await screen.next_refresh()
        assert picker.option_count == count + 1
        assert screen.query_one(MetricsTable).row_count == 9


async def test_log_follow_toggles(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        _, table = await _runs(app, pilot)
        screen = await _open(app, pilot, table, fixture_ws.ids["baseline"])
        await pilot.press("3")
        log = screen.query_one(LogView)
        await pilot.pause()
        assert app.focused is log and log.following
        await pilot.press("f")
        assert not log.following
        await pilot.press("f")
        assert log.following


async def test_the_console_manages_garbage_collection_and_gives_it_back(fixture_engine) -> None:
    import gc

    app = make_app(fixture_engine, manage_gc=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await _runs(app, pilot)
        await pilot.pause()
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        await pilot.press("q")
    assert gc.isenabled() and gc.get_freeze_count() == 0
