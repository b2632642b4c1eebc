"""The console with real runs (fake-stage processes): quitting and coming back,
cancelling and resuming, launching from a template and from a spec file, and
a dropped terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.forms import Template, kind_template
from console.screens.confirm import ConfirmScreen
from console.screens.launch import LaunchScreen
from console.screens.run import RunScreen
from console.screens.runs import RunsScreen
from console.widgets.runs_table import RunsTable
from engine import Engine
from engine.runtime.liveness import supervisor_alive
from store import RunStatus, utcnow
from tests.hangup import default_sighup

from .conftest import fake_spec, make_app, screen_text, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LONG = dict(steps=100_000, step_seconds=0.02, save_every=25)


def _loss_series(screen: RunScreen):
    if screen.model is None:
        return None
    return next((s for (_, key), s in screen.model.series.items() if key == "train/loss"), None)


async def test_quitting_leaves_the_run_going_and_reopening_continues_the_charts(live_engine, tmp_path) -> None:
    run = await live_engine.submit(fake_spec(tmp_path, "long", **LONG))
    app = make_app(live_engine, poll_seconds=0.2, clock=utcnow, open_run=run.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_until(screen, lambda: (s := _loss_series(screen)) is not None and s.last_step >= 10)
        seen = _loss_series(screen).last_step
        assert screen.query_one("LineChart").lines[0].values  # charted
        await pilot.press("q")
    assert not app.is_running

    row = await live_engine.get_run(run.id)
    assert row.status == RunStatus.RUNNING and supervisor_alive(row.pid)

    # A new console, as a new process would be: its own engine on the same workspace.
    again = Engine(live_engine.workspace.root)
    try:
        app = make_app(again, poll_seconds=0.2, clock=utcnow, open_run=run.id)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            await wait_until(screen, lambda: (s := _loss_series(screen)) is not None and s.last_step > seen + 5)
            series = _loss_series(screen)
            assert series.points[0].step <= seen  # the history is there, not only what came after
    finally:
        again.close()


async def test_cancel_asks_first_and_resume_continues(live_engine, tmp_path) -> None:
    run = await live_engine.submit(fake_spec(tmp_path, "stop-me", **LONG))
    app = make_app(live_engine, poll_seconds=0.2, clock=utcnow)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = app.query_one(RunsTable)

        def status() -> RunStatus | None:
            return next((r.status for r in screen.rows if r.id == run.id), None)

        await wait_until(screen, lambda: status() == RunStatus.RUNNING and screen.rows[0].step > 0)
        table.move_cursor(row=table.get_row_index(str(run.id)))
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not (await live_engine.get_run(run.id)).cancel_requested

        await pilot.press("x", "y")
        await app.workers.wait_for_complete()
        await wait_until(screen, lambda: status() == RunStatus.CANCELLED)
        assert "⊘ cancelled" in screen_text(app)

        await pilot.press("r")
        await app.workers.wait_for_complete()
        await wait_until(screen, lambda: status() == RunStatus.RUNNING)
        assert next(r for r in screen.rows if r.id == run.id).attempt == 2
        await live_engine.cancel(run.id)


async def test_a_run_starts_from_a_template_form(live_engine, tmp_path) -> None:
    template = Template("fake", "fake: a torch-free test stage", kind_template("fake"))
    app = make_app(live_engine, poll_seconds=0.2, clock=utcnow, templates=[template], base_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, LaunchScreen)
        assert "fake.steps" in screen_text(app) and "fake.step_seconds" in screen_text(app)

        while app.focused is None or app.focused.id != "field-1":  # the steps field
            await pilot.press("tab")
        await pilot.press("end", "ctrl+u", *"many", "ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        problems = str(screen.query_one("#problems").render())
        assert "'fake'" in problems and "'steps'" in problems and "integer" in problems
        assert live_engine.store.list_runs() == []  # nothing recorded

        await pilot.press("ctrl+u", "3", "ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        run_screen = app.screen
        assert isinstance(run_screen, RunScreen)
        await wait_until(run_screen, lambda: run_screen.model.detail is not None
                         and run_screen.model.detail.run.status == RunStatus.SUCCEEDED)
        assert run_screen.model.detail.run.name == "my-fake"
        assert run_screen.model.detail.stages[0].total == 3


async def test_a_run_starts_from_a_spec_file(live_engine, tmp_path) -> None:
    (tmp_path / "mine.toml").write_text('name = "from-file"\n[stages.work]\nkind = "fake"\nsteps = 2\n')
    app = make_app(live_engine, poll_seconds=0.2, clock=utcnow, base_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, LaunchScreen)
        await pilot.press("enter", "end", "enter")  # open the source list, pick its last entry: a spec file
        await pilot.pause()
        assert screen.query_one("#launch-file").display
        await pilot.press("tab", *"missing.toml", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "missing.toml: no such file" in str(screen.query_one("#problems").render())
        await pilot.press("ctrl+u", *"mine.toml", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        run_screen = app.screen
        assert isinstance(run_screen, RunScreen)
        await wait_until(run_screen, lambda: run_screen.model.detail is not None
                         and run_screen.model.detail.run.status == RunStatus.SUCCEEDED)
        assert run_screen.model.detail.run.name == "from-file"


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _tui(workspace: Path) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "-w", str(workspace), "tui"],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True,
        preexec_fn=default_sighup,
    )
    os.close(slave)
    return process, master


async def test_a_dropped_terminal_leaves_the_run_going(live_engine, tmp_path) -> None:
    run = await live_engine.submit(fake_spec(tmp_path, "survivor", **LONG))
    process, master = _tui(live_engine.workspace.root)
    try:
        # Hang up only once the console shows the run going: it can paint the run
        # while the supervisor is still claiming it (queued), and this test is about
        # a running run outliving the terminal.
        assert b"survivor" in _read_until(master, b"running", 30)
        os.killpg(process.pid, signal.SIGHUP)  # what an SSH disconnect sends the terminal's processes
        process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    row = await live_engine.get_run(run.id)
    assert row.status == RunStatus.RUNNING and supervisor_alive(row.pid)

    process, master = _tui(live_engine.workspace.root)  # re-attach
    try:
        assert b"survivor" in _read_until(master, b"running", 30)
        os.write(master, b"q")
        process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert (await live_engine.get_run(run.id)).status == RunStatus.RUNNING
