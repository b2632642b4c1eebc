"""Rank screen: key press to the next item shown, with 10,000 items in the batch.

    python bench/bench_rank_keypress.py [--items 10000] [--deep 9000] [--presses 200]

Builds a workspace with one batch of `--items` pairs in bulk (needed = 2, so
two people may judge each item), then opens the console (`RlhfApp` on that
workspace, headless, 100x30, its runs screen refreshing underneath as in real
use), pushes the rank screen and presses `1`. A sample is the time from the
key press to the screen's `ItemShown` message, which the screen posts after
the refresh that paints the next item; in between, the judgement is
committed (`Feedback.judge`) and the prefetched next item put on screen.

Phases, side by side in one run:

- fresh: an annotator who has judged nothing yet;
- deep: an annotator who has already judged `--deep` items (inserted in bulk
  beforehand), so each search for their next item runs NOT EXISTS over all of
  their judgements; a second person judged 1,000 of the same items, so the
  screen also computes agreement (on its stats thread, at most 2% of the time).

Each with a reading pause before each key (50-250 ms: the prefetch of the
next item has finished) and back to back (the next key as soon as the item
shows: the prefetch may still be running). Then the store calls alone, at
this size: the part of a key press the store costs.

Issue #5's target: p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, update

from console.app import RlhfApp
from console.screens.rank import RankScreen
from engine import Engine
from store import Store, open_workspace, shown_order, utcnow
from store.models import Judgement, Prompt, RankItem

TARGET_SECONDS = 0.050
SIZE = (100, 30)
OTHER_JUDGED = 1_000


# --- the workspace, in bulk ------------------------------------------------------------


def build_batch(store: Store, items: int) -> int:
    """`items` prompts with two responses each (two checkpoints), one rank item per prompt."""
    now = utcnow()
    texts = [f"Bench prompt {i}: explain, in a few sentences, why item {i} matters." for i in range(items)]
    with store.engine.begin() as connection:
        connection.execute(insert(Prompt.__table__), [
            {"text": t, "text_hash": hashlib.sha256(t.encode()).hexdigest(), "source": "bench", "reference": None,
             "meta": {}, "created_at": now} for t in texts])
    prompt_ids = store.add_prompts([{"text": t} for t in texts])  # looks them up: one query
    batch = store.create_sample_batch(name="bench/10k", settings={}, sources=["ckpt-a", "ckpt-b"])
    body = " ".join(["a response of some length, as a small model writes it"] * 8)
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": f"{side}: {body} ({i})",
         "checkpoint": f"runs/0000{1 + j}/sft/final", "meta": {"tokens": 96, "finished": True}}
        for i, pid in enumerate(prompt_ids) for j, side in enumerate("AB")
    ])
    store.feedback.items_from_batch(batch_id=batch.id, needed=2)
    return batch.id


def judge_in_bulk(store: Store, batch_id: int, annotator: str, positions: range) -> None:
    """Live `a_better` judgements of the items at `positions`, as if made one by one."""
    table = RankItem.__table__
    with store.engine.begin() as connection:
        rows = connection.execute(
            table.select().where(table.c.batch_id == batch_id, table.c.position >= positions.start,
                                 table.c.position < positions.stop)).all()
        now = utcnow()
        judgements = []
        for row in rows:
            shown = shown_order(row.id, annotator, row.sample_ids)
            judgements.append({"item_id": row.id, "batch_id": batch_id, "annotator": annotator,
                               "outcome": "a_better", "shown": shown, "ranking": shown, "comment": None,
                               "flags": [], "seconds": 3.0, "supersedes": None, "created_at": now})
        connection.execute(insert(Judgement.__table__), judgements)
        connection.execute(update(table).where(table.c.batch_id == batch_id, table.c.position >= positions.start,
                                               table.c.position < positions.stop)
                           .values(verdicts=table.c.verdicts + 1))


# --- the console, headless ----------------------------------------------------------------


class BenchApp(RlhfApp):
    """The console, noting when the rank screen reports an item shown or a judgement committed."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, workspace_label="bench")
        self.shown_at: list[float] = []
        self.event = asyncio.Event()

    def on_rank_screen_item_shown(self, message: RankScreen.ItemShown) -> None:
        self.shown_at.append(time.perf_counter())
        self.event.set()

    async def next_shown(self, count: int, timeout: float = 30.0) -> float:
        async with asyncio.timeout(timeout):
            while len(self.shown_at) <= count:
                self.event.clear()
                await self.event.wait()
        return self.shown_at[count]


async def measure(engine: Engine, batch_id: int, annotator: str, presses: int, rng: random.Random
                  ) -> tuple[float, list[float], list[float]]:
    """(seconds to open the screen, samples with a reading pause, samples back to back)."""
    app = BenchApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await app.screen.next_refresh()  # the runs screen has loaded (and the console manages GC from now)
        start = time.perf_counter()
        app.push_screen(RankScreen(engine.store, batch_id=batch_id, annotator=annotator,
                                   workspace_root=engine.workspace.root))
        opened = await app.next_shown(0) - start
        paused, back_to_back = [], []
        for i in range(2 * presses):
            pausing = i < presses
            if pausing:
                await asyncio.sleep(rng.uniform(0.05, 0.25))  # a person reading (far less than a real one)
            count = len(app.shown_at)
            pressed = time.perf_counter()
            await pilot.press("1")
            (paused if pausing else back_to_back).append(await app.next_shown(count) - pressed)
    return opened, paused, back_to_back


# --- the store alone ------------------------------------------------------------------------


def store_calls(store: Store, batch_id: int, annotator: str, repeats: int = 20) -> dict[str, float]:
    """Median seconds of each store call a key press (or the stats thread) makes, for `annotator`."""
    from console.screens.rank import people_agreement

    feedback = store.feedback
    item = feedback.next_item(batch_id=batch_id, annotator=annotator)
    assert item is not None

    def judge_and_undo() -> None:
        feedback.judge(item_id=item.id, annotator=annotator, outcome="a_better", shown=item.shown)
        feedback.undo(batch_id=batch_id, annotator=annotator)

    agreement = people_agreement(store)
    calls: dict[str, tuple[Callable[[], object], int]] = {
        "next_item (after the one on screen)": (lambda: feedback.next_item(
            batch_id=batch_id, annotator=annotator, after_position=item.position, exclude=[item.id]), repeats),
        "next_item (from the start: opening)": (lambda: feedback.next_item(
            batch_id=batch_id, annotator=annotator), repeats),
        "item_at (n / p)": (lambda: feedback.item_at(
            batch_id=batch_id, position=item.position, annotator=annotator), repeats),
        "judge + undo": (judge_and_undo, repeats),
        "progress (stats thread)": (lambda: feedback.progress(batch_id=batch_id, annotator=annotator), repeats),
        "agreement (stats thread, <= 2% of the time)": (lambda: agreement(batch_id), 3),
    }
    result = {name: statistics.median(_times(call, n)) for name, (call, n) in calls.items()}
    feedback.release(annotator=annotator)
    return result


def _times(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


# --- report ------------------------------------------------------------------------------------


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summary(label: str, samples: list[float]) -> str:
    return (f"  {label:<44} p50 {statistics.median(samples) * 1000:6.1f} ms   p95 {p95(samples) * 1000:6.1f} ms   "
            f"max {max(samples) * 1000:6.1f} ms   p95/target {p95(samples) / TARGET_SECONDS:4.2f}   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--deep", type=int, default=9_000, help="items the deep annotator judged beforehand")
    parser.add_argument("--presses", type=int, default=200, help="per phase and pace")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        workspace = open_workspace(Path(tmp) / "ws")
        started = time.perf_counter()
        batch_id = build_batch(workspace.store, args.items)
        judge_in_bulk(workspace.store, batch_id, "deep", range(0, args.deep))
        judge_in_bulk(workspace.store, batch_id, "other", range(0, min(OTHER_JUDGED, args.items)))
        built = time.perf_counter() - started
        workspace.close()

        engine = Engine(Path(tmp) / "ws")
        try:
            fresh = asyncio.run(measure(engine, batch_id, "fresh", args.presses, rng))
            deep = asyncio.run(measure(engine, batch_id, "deep", args.presses, rng))
            calls = store_calls(engine.store, batch_id, "deep")
        finally:
            engine.close()

    print(f"rank screen: key press -> next item shown (headless RlhfApp {SIZE[0]}x{SIZE[1]}, "
          f"{args.items:,} items, pairs, needed 2)")
    print(f"  {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"(other work on the machine shows in these figures)")
    print(f"  workspace built in {built:.1f} s ({args.deep:,} judgements of 'deep' and {OTHER_JUDGED:,} of 'other' "
          "inserted in bulk)")
    for label, (opened, paused, back_to_back) in (("fresh annotator", fresh),
                                                  (f"deep annotator ({args.deep:,} judged)", deep)):
        print(f"  {label}: screen opened, first item shown in {opened * 1000:.0f} ms")
        print(summary(f"{label}, reading pause", paused))
        print(summary(f"{label}, back to back", back_to_back))
    print("  store calls alone (median, 'deep'):")
    for name, seconds in calls.items():
        print(f"    {name:<40} {seconds * 1000:7.2f} ms")
    worst = max(p95(deep[1]), p95(fresh[1]))
    print(f"  target: p95 <= {TARGET_SECONDS * 1000:.0f} ms with a reading pause -> "
          f"{'OK' if worst <= TARGET_SECONDS else 'MISSED'} (worst p95 {worst * 1000:.1f} ms, "
          f"{worst / TARGET_SECONDS:.2f} of the target)")


if __name__ == "__main__":
    main()
