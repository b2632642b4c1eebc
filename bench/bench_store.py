"""How fast the store takes and gives back metric points.

    python bench/bench_store.py [--points 100000] [--keys 10] [--repeats 5]

Writes the same points through `Store.add_metrics` in three batch sizes, side
by side in one run, each time into a fresh temporary workspace:

- per step: one transaction per training step of `--keys` values, the worst
  case (a stage that flushed every step);
- per flush: 1,000 points a transaction, about what StageContext sends after
  its one-second flush interval;
- bulk: every point in one call.

Then reads series back: one key of the per-step layout, and one key holding
every point (the "long chart" case), each in full and downsampled to 1,000
buckets. Prints medians over the repeats, and ratios against bulk writing.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import NewStage, Store, open_workspace

FLUSH_POINTS = 1_000
CHART_POINTS = 1_000

T = TypeVar("T")


def make_points(run_id: int, stage_id: int, n: int, keys: int) -> list[dict]:
    """n points over `keys` keys, step-major as a training loop logs them."""
    now = time.time()
    return [
        {"run_id": run_id, "stage_id": stage_id, "key": f"train/k{i % keys}", "step": i // keys,
         "value": 1.0 / (1 + i), "wall_time": now + i * 1e-3}
        for i in range(n)
    ]


def fresh_store(root: Path, stage_names: list[str]) -> tuple[Store, int, dict[str, int]]:
    ws = open_workspace(root)
    run = ws.store.create_run(
        name="bench", spec_text="", spec={}, spec_path=None,
        stages=[NewStage(name, "pretrain", i, None, {}) for i, name in enumerate(stage_names)],
    )
    stages = {s.name: s.id for s in ws.store.list_stages(run_id=run.id)}
    return ws.store, run.id, stages


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Seconds one call of fn(*args, **kwargs) takes, and what it returned."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def add_all(store: Store, batches: list[list[dict]]) -> None:
    for chunk in batches:
        store.add_metrics(chunk)


def bench(points: int, keys: int, repeats: int, tmp: Path) -> None:
    writes = {  # label -> points per add_metrics call
        f"per step ({keys} points)": keys,
        f"per flush ({FLUSH_POINTS:,} points)": FLUSH_POINTS,
        f"bulk ({points:,} points)": points,
    }
    write_times: dict[str, list[float]] = {label: [] for label in writes}
    reads = {
        f"1 key of {keys}, full": ("layout", None),
        f"1 key of {keys}, {CHART_POINTS:,} buckets": ("layout", CHART_POINTS),
        "1 key, every point, full": ("long", None),
        f"1 key, every point, {CHART_POINTS:,} buckets": ("long", CHART_POINTS),
    }
    read_times: dict[str, list[float]] = {label: [] for label in reads}
    read_sizes: dict[str, tuple[int, int]] = {}

    for repeat in range(repeats):
        for w, (label, batch) in enumerate(writes.items()):
            store, run_id, stages = fresh_store(tmp / f"w{repeat}-{w}", ["s"])
            rows = make_points(run_id, stages["s"], points, keys)
            batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
            seconds, _ = timed(add_all, store, batches)
            write_times[label].append(seconds)
            count = sum(s.count for s in store.metric_summaries(run_id=run_id))
            assert count == points, f"{label}: wrote {count} of {points} points"
            store.close()

        # reads: one workspace holding the layout and a long single-key series
        store, run_id, stages = fresh_store(tmp / f"r{repeat}", ["layout", "long"])
        store.add_metrics(make_points(run_id, stages["layout"], points, keys))
        store.add_metrics(make_points(run_id, stages["long"], points, 1))
        for label, (stage, max_points) in reads.items():
            key = "train/k0"
            seconds, result = timed(store.metric_series, stage_id=stages[stage], key=key, max_points=max_points)
            read_times[label].append(seconds)
            full = len(store.metric_series(stage_id=stages[stage], key=key))
            read_sizes[label] = (full, len(result))
        store.close()

    print(f"store bench: {points:,} metric points over {keys} keys, median of {repeats} runs")
    print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL")
    print()
    bulk = statistics.median(write_times[f"bulk ({points:,} points)"])
    print(f"{'write':<34} {'calls':>8} {'median s':>10} {'points/s':>12} {'vs bulk':>8}")
    for label, batch in writes.items():
        median = statistics.median(write_times[label])
        calls = -(-points // batch)
        print(f"{label:<34} {calls:>8,} {median:>10.3f} {points / median:>12,.0f} {median / bulk:>7.1f}x")
    print()
    print(f"{'read (metric_series)':<34} {'stored':>8} {'returned':>9} {'median ms':>10} {'points/s':>12}")
    for label in reads:
        median = statistics.median(read_times[label])
        stored, returned = read_sizes[label]
        print(f"{label:<34} {stored:>8,} {returned:>9,} {median * 1e3:>10.1f} {stored / median:>12,.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="metric points per write (default 100000)")
    parser.add_argument("--keys", type=int, default=10, help="metric keys per step (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; medians are printed (default 5)")
    args = parser.parse_args(argv)
    if args.points < args.keys or args.keys < 1 or args.repeats < 1:
        parser.error("need --points >= --keys >= 1 and --repeats >= 1")
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-store-") as tmp:
        bench(args.points, args.keys, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
