"""The console's first screen is read without the store's ORM (issue 12, item 7).

SQLAlchemy and sqlmodel cost more to import than the rest of the console's
start-up; the runs list is read with plain sqlite3 (store.reads), so the ORM
is first imported by the sparklines' reads, after the runs are on screen.
Checked in a fresh interpreter, where nothing has imported it yet.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import FixtureWorkspace

ORM = ("sqlalchemy", "sqlmodel", "alembic")

CHILD = """
import asyncio, sys
from console.app import RlhfApp
from console.screens.runs import RunsScreen
from engine import Engine

loaded_when_shown = []
show = RunsScreen._show

def recording_show(self):
    if not loaded_when_shown:
        loaded_when_shown.append(sorted(m for m in sys.modules if m.split('.')[0] in {orm!r}))
    show(self)

RunsScreen._show = recording_show

async def main():
    engine = Engine({root!r})
    app = RlhfApp(engine, manage_gc=False)
    async with app.run_test(size=(80, 24)):
        await app.screen.next_refresh()
        print("rows", len(app.screen.rows), "spark", sum(1 for r in app.screen.rows if r.spark))
    engine.close()

asyncio.run(main())
print("orm at first screen", loaded_when_shown[0])
"""


def test_the_runs_screen_shows_its_runs_before_importing_the_orm(fixture_ws: FixtureWorkspace) -> None:
    code = CHILD.format(root=str(fixture_ws.root), orm=ORM)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"rows {len(fixture_ws.ids)} " in out
    assert "spark 0" not in out  # the sparklines came right after, from the ORM's reads
    assert "orm at first screen []" in out
