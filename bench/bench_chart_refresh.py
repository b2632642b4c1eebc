"""What refreshing a run costs the console, with 1,000 vs 1,000,000 metric points.

    python bench/bench_chart_refresh.py [--repeats 30] [--big 1000000] [--small 1000]

One workspace, two running runs, side by side: `small` logged `--small`
train/loss points (and an eval/loss every 10 steps), `big` logged `--big`.
Before each refresh both runs log 10 more steps, as a training run does
between two refreshes. Prints medians of:

- refresh (data): `RunModel.refresh()`, everything the run screen reads each
  second: the run and its stages, new metric keys, the points after the last
  step read for every key (downsampled by bucket in SQL), new log lines;
- refresh (screen): the run screen's whole refresh inside the app (run
  headless at 160x48): the reads above plus updating header, pipeline, tables,
  log and chart;
- first open: the first `RunModel.refresh()`, which downsamples each key's
  whole history in SQL once (this one does grow with the points);
- for contrast, what a naive refresh would cost: reading the chart's whole
  series again each time (`metric_series(max_points=320)` over every point).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine  # noqa: E402
from store import NewStage, RunStatus, Store, open_workspace, utcnow  # noqa: E402


def make_run(store: Store, name: str, points: int) -> tuple[int, int]:
    run = store.create_run(name=name, spec_text="", spec={"stages": {"pretrain": {"kind": "pretrain"}}},
                           spec_path=None, stages=[NewStage("pretrain", "pretrain", 0, None, {})])
    stage = store.list_stages(run_id=run.id)[0]
    batch: list[dict] = []
    for step in range(1, points + 1):
        batch.append({"run_id": run.id, "stage_id": stage.id, "key": "train/loss", "step": step,
                      "value": 2 + 1 / step, "wall_time": 1e9 + step})
        if step % 10 == 0:
            batch.append({"run_id": run.id, "stage_id": stage.id, "key": "eval/loss", "step": step,
                          "value": 2.2 + 1 / step, "wall_time": 1e9 + step})
        if len(batch) >= 100_000:
            store.add_metrics(batch)
            batch = []
    store.add_metrics(batch)
    store.update_stage(stage.id, status="running", step=points, total=points * 2, started_at=utcnow())
    store.update_run(run.id, status=RunStatus.RUNNING, started_at=utcnow(), heartbeat_at=utcnow())
    return run.id, stage.id


class Runs:
    """The two runs, each able to log its next steps."""

    def __init__(self, store: Store, sizes: dict[str, int]) -> None:
        self.store = store
        self.next_step = {}
        self.ids = {}
        for name, points in sizes.items():
            self.ids[name] = make_run(store, name, points)
            self.next_step[name] = points + 1

    def log_more(self, steps: int = 10) -> None:
        for name, (run_id, stage_id) in self.ids.items():
            first = self.next_step[name]
            self.store.add_metrics([
                {"run_id": run_id, "stage_id": stage_id, "key": "train/loss", "step": s, "value": 2 + 1 / s,
                 "wall_time": 1e9 + s} for s in range(first, first + steps)
            ])
            self.store.add_logs([{"run_id": run_id, "stage_id": stage_id, "message": f"step {first + steps - 1}"}])
            self.store.heartbeat(run_id)  # no process behind these runs: keep them "running"
            self.next_step[name] = first + steps


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.2f} ms"


async def data_refresh(engine: Engine, runs: Runs, repeats: int) -> dict[str, dict[str, list[float]]]:
    from console.view_models import RunModel

    results: dict[str, dict[str, list[float]]] = {}
    for name, (run_id, stage_id) in runs.ids.items():
        model = RunModel(engine, run_id, capacity=320)
        start = time.perf_counter()
        await model.refresh()
        first = time.perf_counter() - start
        steady, naive = [], []
        for _ in range(repeats):
            runs.log_more()
            start = time.perf_counter()
            await model.refresh()
            steady.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.store.metric_series(stage_id=stage_id, key="train/loss", max_points=320)
            naive.append(time.perf_counter() - start)
        results[name] = {"first": [first], "steady": steady, "naive": naive}
    return results


async def screen_refresh(engine: Engine, runs: Runs, repeats: int) -> dict[str, list[float]]:
    from console.app import RlhfApp
    from console.screens.run import RunScreen
    from console.sysinfo import SystemSnapshot

    class Quiet:
        def sample(self) -> SystemSnapshot:
            return SystemSnapshot(cpu_percent=0, cpu_count=1, memory_used=0, memory_total=1)

    results = {}
    for name, (run_id, _) in runs.ids.items():
        app = RlhfApp(engine, sampler=Quiet(), poll_seconds=3600, open_run=run_id)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, RunScreen)
            await screen.next_refresh()
            times = []
            for _ in range(repeats):
                runs.log_more()
                start = time.perf_counter()
                await screen.next_refresh()
                times.append(time.perf_counter() - start)
            assert screen.query_one("LineChart").lines, "nothing charted"
        results[name] = times
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        workspace = open_workspace(root)
        start = time.perf_counter()
        runs = Runs(workspace.store, {"small": args.small, "big": args.big})
        written = time.perf_counter() - start
        engine = Engine(root)
        data = asyncio.run(data_refresh(engine, runs, args.repeats))
        screen = asyncio.run(screen_refresh(engine, runs, args.repeats))
        engine.close()
        workspace.close()

    small, big = f"{args.small:,} points", f"{args.big:,} points"
    print(f"run refresh cost, {args.repeats} refreshes each, medians (workspace written in {written:.1f} s)")
    print(f"  {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"  load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"(other work on the machine shows in these figures)")
    print(f"  {'':34} {small:>16} {big:>16}   ratio")

    def row(label: str, a: list[float], b: list[float]) -> None:
        ratio = statistics.median(b) / statistics.median(a)
        print(f"  {label:34} {ms(a):>16} {ms(b):>16}   {ratio:5.2f}x")

    row("refresh (data: RunModel.refresh)", data["small"]["steady"], data["big"]["steady"])
    row("refresh (screen, in the app)", screen["small"], screen["big"])
    row("first open (whole history, once)", data["small"]["first"], data["big"]["first"])
    row("naive: re-read whole series", data["small"]["naive"], data["big"]["naive"])


if __name__ == "__main__":
    main()
