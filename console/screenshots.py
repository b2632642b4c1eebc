"""Screenshots of the console for the README, taken from a real workspace.

    .venv/bin/rlhf -w /tmp/demo demo --headless      # a finished demo run to show
    .venv/bin/python -m console.screenshots /tmp/demo --run 1 --out console/readme-images

Drives the real app headless (Textual's pilot) over the workspace, one screen
at a time, and saves each as an SVG: the runs list, the run's charts and
samples, the rank screen on the run's batch, and the report. Nothing is
written to the workspace except the rank screen's claims, which it releases.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from engine import Engine

from .app import RlhfApp

SIZE = (120, 36)


async def take(workspace: Path, run_id: int, out: Path, rank_batch: int | None = None) -> list[Path]:
    from .screens.rank import RankScreen
    from .screens.report import ReportScreen
    from .screens.run import RunScreen

    out.mkdir(parents=True, exist_ok=True)
    engine = Engine(workspace)
    written: list[Path] = []
    app = RlhfApp(engine, manage_gc=False, workspace_label="rlhf-workspace")

    async def settle(pilot, seconds: float = 1.5) -> None:  # type: ignore[no-untyped-def]
        refresh = getattr(app.screen, "next_refresh", None)
        if refresh is not None:
            await refresh()
        await pilot.pause(seconds)

    def save(name: str) -> None:
        path = out / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(out))
        written.append(path)

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        save("runs")
        app.open_run(run_id)
        await settle(pilot)
        assert isinstance(app.screen, RunScreen)
        save("run-charts")
        await pilot.press("6")  # the samples tab
        await settle(pilot)
        save("run-samples")
        await pilot.press("escape")
        batches = [b.id for b in engine.reads.list_sample_batches(run_id=run_id)]
        batch = rank_batch or (batches[0] if batches else None)
        if batch is not None:
            app.open_rank(batch, "you")
            await settle(pilot, 3.0)
            assert isinstance(app.screen, RankScreen)
            save("rank")
            await pilot.press("escape")
        app.open_report(run_id)
        await settle(pilot, 3.0)
        assert isinstance(app.screen, ReportScreen)
        save("report")
    engine.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("readme-images"))
    parser.add_argument("--rank-batch", type=int, help="the batch to show on the rank screen (one with items left)")
    args = parser.parse_args(argv)
    for path in asyncio.run(take(args.workspace, args.run, args.out, args.rank_batch)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
