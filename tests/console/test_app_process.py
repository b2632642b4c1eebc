"""The console in a fresh interpreter: through every screen it imports no ML
library (checked in `sys.modules`, which static checks cannot see), and it
runs with 16 colours and with NO_COLOR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")

pytestmark = pytest.mark.timeout(120)

# Walks every screen of the console over the fixture workspace, then reports.
TOUR = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from tests.console.conftest import FixtureWorkspace, make_app
    from engine import Engine

    async def tour(root):
        ws = FixtureWorkspace(Path(root)).build()
        engine = Engine(ws.root)
        app = make_app(engine, sampler=None)  # the real sampler: psutil, NVML or nvidia-smi
        seen = []
        async with app.run_test(size=(80, 24)) as pilot:
            await app.screen.next_refresh()
            seen.append(type(app.screen).__name__)
            await pilot.press("space", "space", "c")
            await app.screen.next_refresh()
            seen.append(type(app.screen).__name__)
            await pilot.press("escape", "k", "k", "enter")
            await app.screen.next_refresh()
            seen.append(type(app.screen).__name__)
            for key in "123456":
                await pilot.press(key)
            await pilot.press("question_mark")
            seen.append(type(app.screen).__name__)
            await pilot.press("escape", "escape", "n")
            seen.append(type(app.screen).__name__)
            await pilot.press("escape", "x")
            seen.append(type(app.screen).__name__)
            await pilot.press("escape", "ctrl+p")
            seen.append(type(app.screen).__name__)
            app.save_screenshot(path=root, filename="shot.svg")
            await pilot.press("escape", "q")
        return seen, app

    seen, app = asyncio.run(tour(sys.argv[1]))
    print(json.dumps({
        "screens": seen,
        "heavy": sorted(m for m in %r if m in sys.modules),
        "no_color": app.no_color,
        "color_system": app.console.color_system,
    }))
""" % (HEAVY,))  # noqa: UP031  the template is Python full of braces, which % leaves alone


def tour(tmp_path: Path, **env: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environment.pop("RLHF_STAGE_PLUGINS", None)
    result = subprocess.run([sys.executable, "-c", TOUR, str(tmp_path)], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a tour of every screen in a fresh interpreter
def test_every_screen_is_torch_free_and_works_with_16_colours_and_without_colour(tmp_path: Path) -> None:
    # One tour (a fresh interpreter costs seconds): the colour settings cannot change what is imported.
    report = tour(tmp_path, TEXTUAL_COLOR_SYSTEM="standard", NO_COLOR="1")
    assert report["screens"] == ["RunsScreen", "CompareScreen", "RunScreen", "KeysScreen", "LaunchScreen",
                                 "ConfirmScreen", "CommandPalette"]
    assert report["heavy"] == []
    assert report["no_color"] and report["color_system"] == "standard"
    assert (tmp_path / "shot.svg").stat().st_size > 0


def test_the_console_s_domain_code_is_free_of_textual() -> None:
    code = (
        "import console.view_models, console.forms, console.sysinfo, sys; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "textual" not in result.stdout
