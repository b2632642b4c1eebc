"""The rank screen's test support: a batch builder, a minimal app that hosts the
screen, and a runner that ranks in a child process (for the kill and the
two-annotator tests).

    python -m tests.console.rank_runner WORKSPACE BATCH_ID ANNOTATOR [--seed N]

The runner starts the console headless, presses verdict keys, and prints one
line per judgement the screen reported committed:

    judged <judgement id> <item id> <outcome> <shown as JSON>

then `done` when nothing is left for the annotator. A parent that reads a
line may rely on that judgement being in the store, whatever happens next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from textual.app import App

from console.screens.rank import RankScreen
from engine import Annotation
from store import ItemView, JudgementRead, Store, open_workspace

#: the keys the runner presses, with the outcome each records on a pair
VERDICT_KEYS = {"1": "a_better", "2": "b_better", "left": "a_better", "right": "b_better",
                "equals_sign": "tie", "b": "both_bad"}


def make_rank_batch(
    store: Store,
    prompts: int = 3,
    k: int = 2,
    *,
    name: str = "batch",
    needed: int = 1,
    responses: Callable[[int, int], str] | None = None,
    prompt_text: Callable[[int], str] | None = None,
) -> int:
    """A rankable batch: `prompts` items of `k` responses, written by checkpoints
    ckpt-a, ckpt-b, ... in turn (response j of prompt i by the j-th)."""
    texts = [prompt_text(i) if prompt_text else f"{name}: prompt {i}" for i in range(prompts)]
    prompt_ids = store.add_prompts([{"text": text} for text in texts])
    checkpoints = [f"ckpt-{chr(ord('a') + j)}" for j in range(k)]
    batch = store.create_sample_batch(name=name, settings={"temperature": 0.8}, sources=checkpoints)
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "checkpoint": checkpoints[j],
         "response": responses(i, j) if responses else f"response {j} to prompt {i}",
         "meta": {"tokens": 4 + j, "finished": j % 2 == 0}}
        for i, pid in enumerate(prompt_ids) for j in range(k)
    ])
    store.feedback.items_from_batch(batch_id=batch.id, needed=needed)
    return batch.id


class RankHarness(App[None]):
    """A bare app with the rank screen pushed on top; it records what the
    screen reports, so tests wait on events rather than on time."""

    def __init__(self, store: Store, *, batch_id: int, annotator: str, **screen_kwargs: Any) -> None:
        super().__init__()
        self.store = store
        self.screen_args = dict(batch_id=batch_id, annotator=annotator, **screen_kwargs)
        self.shown: list[ItemView | None] = []
        self.judged: list[JudgementRead] = []
        self.settled = 0  # judgements, undos, comments and moves finished
        self._changed = asyncio.Event()
        self.animation_level = "none"

    def on_mount(self) -> None:
        self.push_screen(RankScreen(Annotation(self.store), **self.screen_args))

    @property
    def rank(self) -> RankScreen:
        screen = next(s for s in self.screen_stack if isinstance(s, RankScreen))
        return screen

    def on_rank_screen_item_shown(self, message: RankScreen.ItemShown) -> None:
        self.shown.append(message.item)
        self._changed.set()

    def on_rank_screen_judged(self, message: RankScreen.Judged) -> None:
        self.judged.append(message.judgement)
        self._changed.set()

    def on_rank_screen_settled(self, message: RankScreen.Settled) -> None:
        self.settled += 1
        self._changed.set()

    def on_rank_screen_progress_shown(self, message: RankScreen.ProgressShown) -> None:
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Until `condition()` holds, woken by each report of the screen; fails after `timeout` s."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_more(self, rows: Sequence[object], than: int) -> None:
        """Until `rows` (a list the screen's reports append to) holds more than `than`."""
        await self.wait_for(lambda: len(rows) > than)

    async def settle(self, settled: int, timeout: float = 20.0) -> None:
        """Until more than `settled` actions have finished (read `self.settled` before the keys)."""
        await self.wait_for(lambda: self.settled > settled, timeout)


async def rank_until_done(store: Store, batch_id: int, annotator: str, seed: int,
                          keys: Sequence[str] = tuple(VERDICT_KEYS)) -> None:
    rng = random.Random(seed)
    app = RankHarness(store, batch_id=batch_id, annotator=annotator)
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_for(lambda: bool(app.shown))
        print("ready", flush=True)
        while (item := app.shown[-1]) is not None:
            judged, shown = len(app.judged), len(app.shown)
            await pilot.press(rng.choice(keys))
            await app.wait_for_more(app.judged, than=judged)
            row = app.judged[-1]
            assert row.item_id == item.id
            print(f"judged {row.id} {row.item_id} {row.outcome} {json.dumps(row.shown)}", flush=True)
            await app.wait_for_more(app.shown, than=shown)
        print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace")
    parser.add_argument("batch_id", type=int)
    parser.add_argument("annotator")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    workspace = open_workspace(args.workspace, create=False)
    try:
        asyncio.run(rank_until_done(workspace.store, args.batch_id, args.annotator, args.seed))
    finally:
        workspace.close()


if __name__ == "__main__":
    main()
