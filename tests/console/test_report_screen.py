"""The report screen: `R` on a run screen shows the run's key numbers."""

from __future__ import annotations

from console.screens.report import ReportScreen
from console.screens.run import RunScreen

from .conftest import make_app, screen_text


async def test_R_on_a_run_opens_its_report(fixture_engine, fixture_ws) -> None:
    app = make_app(fixture_engine)
    run_id = fixture_ws.ids["baseline"]
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(run_id)
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        await pilot.press("R")
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        await screen.next_refresh()
        await pilot.pause()
        text = screen_text(app)
        assert f"report of run {run_id}" in text and "held-out loss" in text
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)
