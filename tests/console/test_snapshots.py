"""Snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot).

The fixture workspace has fixed times, the clock is fixed and the system
panel reads a fake sampler, so every machine renders the same screens.
Update after a deliberate change with `pytest tests/console/test_snapshots.py --snapshot-update`
and look at the report before committing.
"""

from __future__ import annotations

import pytest

from console.forms import Template
from engine.demo.pipeline import DEMO_SPEC

from .conftest import make_app

pytestmark = pytest.mark.timeout(60)

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def _ready(*keys: str, run: str | None = None, tab: str | None = None):
    """A run_before: wait for the first refresh, then open a run and press keys."""

    async def run_before(pilot) -> None:
        app = pilot.app
        await app.screen.next_refresh()
        if run is not None:
            app.open_run(app.fixture_ids[run], tab=tab or "charts")
            await pilot.pause()
            await app.screen.next_refresh()
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
            if hasattr(app.screen, "next_refresh"):
                await app.screen.next_refresh()
        await pilot.pause()

    return run_before


def _app(fixture_engine, fixture_ws, **kwargs):
    app = make_app(fixture_engine, **kwargs)
    app.fixture_ids = fixture_ws.ids
    return app


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare, fixture_engine, fixture_ws, size) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=size, run_before=_ready())


@pytest.mark.parametrize("size", SIZES)
def test_run_screen_charts(snap_compare, fixture_engine, fixture_ws, size) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=size,
                        run_before=_ready(run="two-stage"))


def test_run_screen_charts_log_scale_smoothed_by_time(snap_compare, fixture_engine, fixture_ws) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=(80, 24),
                        run_before=_ready("l", "s", "s", "w", run="baseline"))


def test_run_screen_metrics(snap_compare, fixture_engine, fixture_ws) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=(80, 24),
                        run_before=_ready(run="two-stage", tab="metrics"))


@pytest.mark.parametrize("size", SIZES)
def test_run_screen_log_is_literal(snap_compare, fixture_engine, fixture_ws, size) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=size,
                        run_before=_ready(run="literal", tab="log"))


def test_run_screen_samples_are_literal(snap_compare, fixture_engine, fixture_ws) -> None:
    async def run_before(pilot) -> None:
        await _ready(run="literal", tab="samples")(pilot)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_compare_screen(snap_compare, fixture_engine, fixture_ws, size) -> None:
    # marks lr-high and baseline (the last two rows), then compares
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=size,
                        run_before=_ready("G", "k", "space", "space", "c"))


def test_launch_screen(snap_compare, fixture_engine, fixture_ws) -> None:
    app = _app(fixture_engine, fixture_ws, templates=[Template("demo", "demo: pretrain a tiny Llama", DEMO_SPEC)])
    assert snap_compare(app, terminal_size=(80, 24), run_before=_ready("n"))


def test_keys_screen(snap_compare, fixture_engine, fixture_ws) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=(80, 24),
                        run_before=_ready("question_mark", run="two-stage"))


def test_cancel_confirmation(snap_compare, fixture_engine, fixture_ws) -> None:
    assert snap_compare(_app(fixture_engine, fixture_ws), terminal_size=(80, 24),
                        run_before=_ready("j", "x"))
