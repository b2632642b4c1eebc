"""The rank screen: pairwise and K-wise judging by keyboard, undo, comments,
browsing, literal text, durability under SIGKILL, two annotators at once."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy import text as sql
from textual.app import App

from console.screens.rank import RankScreen
from console.screens.rank_batches import RankBatchesScreen
from console.screens.rank_comment import CommentScreen
from console.screens.rank_help import RankHelpScreen
from console.widgets.prompt_panel import PromptPanel
from console.widgets.ranking_bar import RankingBar
from console.widgets.responses_view import ResponsesView
from engine import Annotation
from store import ItemView, JudgementOutcome, Store, open_workspace
from store.models import ItemClaim

from .conftest import HOSTILE, screen_segments, screen_text
from .rank_runner import RankHarness, make_rank_batch

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


async def _started(app: RankHarness, pilot) -> None:
    await app.wait_for(lambda: bool(app.shown))
    await pilot.pause()


async def _press_and_wait(app: RankHarness, pilot, *keys: str) -> None:
    """Press keys that end in a judgement, undo or move; wait until the next item is shown."""
    shown = len(app.shown)
    await pilot.press(*keys)
    await app.wait_for(lambda: len(app.shown) > shown)
    await pilot.pause()


def _claims(store: Store, annotator: str) -> list[int]:
    with store.engine.connect() as connection:
        return [row.item_id for row in connection.execute(
            sql_select(ItemClaim.__table__.c.item_id).where(ItemClaim.__table__.c.annotator == annotator))]


def store_items(store: Store, batch: int) -> list[ItemView]:
    items = []
    position = 0
    while (item := store.feedback.item_at(batch_id=batch, position=position, annotator="x")) is not None:
        items.append(item)
        position += 1
    return items


# --- pairs ------------------------------------------------------------------------------------


async def test_pair_keys_record_their_outcome_with_the_shown_order(store: Store) -> None:
    batch = make_rank_batch(store, prompts=8, k=2)
    keys = ["1", "2", "left", "right", "equals_sign", "b", "s"]
    expected = ["a_better", "b_better", "a_better", "b_better", "tie", "both_bad", "skipped"]
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        for key in keys:
            await _press_and_wait(app, pilot, key)
        text = screen_text(app)
        assert "item 8 of 8" in text

    rows = store.feedback.judgements(batch_id=batch, annotator="ann")
    assert [r.outcome for r in rows] == expected
    for row, item in zip(rows, app.shown):
        assert item is not None and row.item_id == item.id
        assert row.shown == item.shown  # left-to-right as this annotator saw it
        assert row.seconds is not None and row.seconds >= 0
        if row.outcome == "a_better":
            assert row.ranking == item.shown
        elif row.outcome == "b_better":
            assert row.ranking == list(reversed(item.shown))
        else:
            assert row.ranking == []
    # positions were shuffled per item: both layouts happened in 8 items
    assert len({tuple(sorted(i.shown)) == tuple(i.shown) for i in app.shown if i is not None}) == 2


async def test_each_judgement_is_committed_before_the_next_item_shows(store: Store) -> None:
    batch = make_rank_batch(store, prompts=4, k=2)
    committed_when_shown: list[int] = []

    class Probe(RankHarness):
        def on_rank_screen_item_shown(self, message: RankScreen.ItemShown) -> None:
            committed_when_shown.append(len(store.feedback.judgements(batch_id=batch)))
            super().on_rank_screen_item_shown(message)

    app = Probe(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        for key in ("1", "2", "b", "1"):
            await _press_and_wait(app, pilot, key)
        assert app.shown[-1] is None  # done
    assert committed_when_shown == [0, 1, 2, 3, 4]


async def test_the_reveal_names_the_checkpoints_only_after_the_vote(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=2)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        assert "ckpt-" not in screen_text(app)
        first = app.shown[-1]
        assert first is not None
        await _press_and_wait(app, pilot, "2")
        a, b = (r.checkpoint for r in first.responses)
        text = screen_text(app)
        assert f"last: A = {a}, B = {b}  (you: B better)" in text
        assert text.count("ckpt-") == 2  # the new item's checkpoints stay hidden


async def test_undo_withdraws_the_last_judgement_and_shows_its_item_again(store: Store) -> None:
    batch = make_rank_batch(store, prompts=3, k=2)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        first = app.shown[-1]
        assert first is not None
        await _press_and_wait(app, pilot, "1")
        await _press_and_wait(app, pilot, "u")
        again = app.shown[-1]
        assert again is not None and again.id == first.id and again.mine is None
        assert again.shown == first.shown
        assert store.feedback.live_judgements(batch_ids=[batch]) == []
        assert "undone: your judgement of item 1 (A better)" in screen_text(app)
        await _press_and_wait(app, pilot, "2")
        assert app.shown[-1] is not None and app.shown[-1].position == 1
    [live] = store.feedback.live_judgements(batch_ids=[batch])
    assert live.item_id == first.id and live.outcome == "b_better"
    assert [r.outcome for r in store.feedback.judgements(batch_id=batch)] == ["a_better", "undone", "b_better"]


async def test_a_comment_is_stored_with_the_verdict_and_can_be_edited_later(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=2)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        first = app.shown[-1]
        assert first is not None
        await pilot.press("c")
        assert isinstance(app.screen, CommentScreen)
        await pilot.press(*"A", "space", *"rambles", "enter")
        assert isinstance(app.screen, RankScreen)
        assert "comment, saved with your verdict: A rambles" in screen_text(app)
        await _press_and_wait(app, pilot, "2")
        [row] = store.feedback.judgements(batch_id=batch)
        assert row.comment == "A rambles" and row.outcome == "b_better"

        await _press_and_wait(app, pilot, "p")  # back to the judged item: the comment is on record
        assert app.shown[-1] is not None and app.shown[-1].id == first.id
        assert "comment: A rambles" in screen_text(app)
        settled = app.settled
        await pilot.press("c", "exclamation_mark", "enter")
        await app.settle(settled)
        await pilot.pause()
        assert "comment: A rambles!" in screen_text(app)
    live = store.feedback.live_judgements(batch_ids=[batch])
    assert [(j.outcome, j.comment) for j in live] == [("b_better", "A rambles!")]


async def test_n_and_p_browse_and_judging_again_is_an_edit(store: Store) -> None:
    batch = make_rank_batch(store, prompts=4, k=2)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        await _press_and_wait(app, pilot, "1")
        await _press_and_wait(app, pilot, "2")
        assert app.shown[-1] is not None and app.shown[-1].position == 2
        await _press_and_wait(app, pilot, "p")
        await _press_and_wait(app, pilot, "p")
        back = app.shown[-1]
        assert back is not None and back.position == 0 and back.mine is not None
        text = screen_text(app)
        assert "you judged this: A better" in text
        a, b = (r.checkpoint for r in back.responses)
        assert f"A · better · {a}" in text and f"B · {b}" in text  # judged: nothing left to hide
        settled = app.settled
        await pilot.press("p")  # before the first: says so, stays
        await app.settle(settled)
        assert app.shown[-1] is back
        assert any("first item" in n.message for n in app._notifications)
        await _press_and_wait(app, pilot, "n")
        assert app.shown[-1] is not None and app.shown[-1].position == 1
        await _press_and_wait(app, pilot, "p")
        await _press_and_wait(app, pilot, "equals_sign")  # an edit of item 1's verdict
        # then on to the first item this annotator has not judged: the one that was on screen
        assert app.shown[-1] is not None and app.shown[-1].position == 2
    live = {j.item_id: j.outcome for j in store.feedback.live_judgements(batch_ids=[batch])}
    assert sorted(live.values()) == ["b_better", "tie"]
    assert live[back.id] == "tie"
    assert store.feedback.progress(batch_id=batch, annotator="ann").mine == 2


async def test_when_nothing_is_left_it_says_so_and_closing_releases_the_claims(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=2)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        await app.rank._prefetch[1]  # type: ignore[index]
        assert sorted(_claims(store, "ann")) == sorted(i.id for i in store_items(store, batch))  # shown + prefetched
        await _press_and_wait(app, pilot, "1")
        await _press_and_wait(app, pilot, "1")
        assert app.shown[-1] is None
        await app.wait_for(lambda: app.rank.progress is not None and app.rank.progress.mine == 2)
        await pilot.pause()
        text = screen_text(app)
        assert "Nothing left for you in batch batch." in text
        assert "You judged 2 of its 2 items; the batch has 2 of the 2 verdicts it needs from 1 annotator." in text
        await pilot.press("1")  # nothing to judge: no error, no row
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RankScreen)
    assert len(store.feedback.judgements(batch_id=batch)) == 2
    assert _claims(store, "ann") == []


async def test_help_opens_and_closes(store: Store) -> None:
    batch = make_rank_batch(store, prompts=1, k=2)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 40)) as pilot:
        await _started(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, RankHelpScreen)
        await pilot.pause()
        text = screen_text(app)
        assert "type the responses' numbers best first" in text and "both bad" in text
        await pilot.press("escape")
        assert isinstance(app.screen, RankScreen)


@pytest.mark.parametrize("width, stacked", [(80, True), (120, False)])
async def test_a_narrow_terminal_stacks_the_responses(store: Store, width: int, stacked: bool) -> None:
    long = "\n".join(f"line {n}" for n in range(60))
    batch = make_rank_batch(store, prompts=1, k=2, responses=lambda i, j: long)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(width, 30)) as pilot:
        await _started(app, pilot)
        view = app.rank.query_one(ResponsesView)
        a, b = view.panels
        assert view.stacked is stacked
        if stacked:
            assert b.region.y > a.region.y and b.region.x == a.region.x
        else:
            assert b.region.x > a.region.x and b.region.y == a.region.y
        # long responses scroll: shift+down scrolls the focused one, tab moves focus to the other
        assert app.focused is a
        await pilot.press("shift+down", "shift+down", "j")
        assert a.scroll_y == 3 and b.scroll_y == 0
        await pilot.press("tab")
        assert app.focused is b
        await pilot.press("down")
        assert b.scroll_y == 1


# --- rankings of K > 2 ------------------------------------------------------------------------


async def test_four_responses_are_put_in_order_by_typing_their_numbers(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=4)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 40)) as pilot:
        await _started(app, pilot)
        item = app.shown[-1]
        assert item is not None and len(item.responses) == 4
        bar = app.rank.query_one(RankingBar)
        await pilot.press("enter")  # nothing placed: nothing submitted
        await pilot.press("3", "1", "3")  # the second 3 is refused
        assert "your order, best first: 3 > 1 > _ > _" in bar.render().plain
        await pilot.press("4")
        assert "3 > 1 > 4 > (2)" in bar.render().plain  # the last is implied
        await pilot.press("backspace", "2")
        assert "3 > 1 > 2 > (4)" in bar.render().plain
        await pilot.pause()
        assert "3 · 1st" in screen_text(app) and "4 · 4th" in screen_text(app)
        assert store.feedback.judgements(batch_id=batch) == []
        await _press_and_wait(app, pilot, "enter")
    [row] = store.feedback.judgements(batch_id=batch)
    assert row.outcome == JudgementOutcome.RANKING and row.shown == item.shown
    assert row.ranking == [item.shown[2], item.shown[0], item.shown[1], item.shown[3]]


async def test_ties_and_skips_work_on_rankings_too(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=3)
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 40)) as pilot:
        await _started(app, pilot)
        await _press_and_wait(app, pilot, "equals_sign")
        await _press_and_wait(app, pilot, "s")
        assert app.shown[-1] is None
    assert [r.outcome for r in store.feedback.judgements(batch_id=batch)] == ["tie", "skipped"]


async def test_a_batch_mixing_pairs_and_rankings_switches_keys_per_item(store: Store) -> None:
    batch = make_rank_batch(store, prompts=1, k=4)  # one item of four; then a pair and a triple
    pair_prompt, triple_prompt = store.add_prompts([{"text": "a pair"}, {"text": "a triple"}])
    store.add_samples([{"prompt_id": pair_prompt, "batch_id": batch, "response": f"p{j}"} for j in range(2)]
                      + [{"prompt_id": triple_prompt, "batch_id": batch, "response": f"t{j}"} for j in range(3)])
    ids = [s.id for s in store.list_samples(batch_id=batch)]
    store.feedback.add_items(batch_id=batch, groups=[(pair_prompt, ids[4:6]), (triple_prompt, ids[6:9])])
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(120, 40)) as pilot:
        await _started(app, pilot)
        await _press_and_wait(app, pilot, "4", "3", "2", "enter")
        assert len(app.rank.query_one(ResponsesView).panels) == 2
        assert "A · " not in screen_text(app) and "Which response is better, A or B?" in screen_text(app)
        await _press_and_wait(app, pilot, "right")
        assert len(app.rank.query_one(ResponsesView).panels) == 3
        await _press_and_wait(app, pilot, "2", "3", "enter")
        assert app.shown[-1] is None
    rows = store.feedback.judgements(batch_id=batch)
    assert [r.outcome for r in rows] == ["ranking", "b_better", "ranking"]
    four, _, three = (item for item in app.shown if item is not None)
    assert rows[0].ranking == [four.shown[3], four.shown[2], four.shown[1], four.shown[0]]
    assert rows[2].ranking == [three.shown[1], three.shown[2], three.shown[0]]


# --- literal text -------------------------------------------------------------------------------


async def test_model_text_is_shown_literally(store: Store) -> None:
    batch = make_rank_batch(store, prompts=1, k=2, prompt_text=lambda i: f"[b]Q:[/b] {HOSTILE}",
                            responses=lambda i, j: f"answer {j} [red]x[/red] \x1b[31mred\x1b[0m [link=http://x]y[/link]")
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(160, 40)) as pilot:
        await _started(app, pilot)
        text = screen_text(app)
        assert "[b]Q:[/b] [red]x[/red] [link=file:///etc/passwd]y[/link] \\e[31mred\\e[0m \\e]0;title\\x07" in text
        assert "answer 0 [red]x[/red] \\e[31mred\\e[0m [link=http://x]y[/link]" in text
        assert "answer 1 [red]x[/red]" in text
        assert "\x1b" not in text and "\x07" not in text
        assert all(s.style is None or not s.style.link for s in screen_segments(app))
        assert app.rank.query_one(PromptPanel).text.startswith("[b]Q:[/b]")


# --- durability: SIGKILL while ranking ------------------------------------------------------------


class Runners:
    """Rank runners in child processes, one per annotator (seeded by its place), and
    their output lines as they come, from one reader thread each."""

    def __init__(self, workspace: Path, batch: int, annotators: Sequence[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.processes = {
            name: subprocess.Popen(
                [sys.executable, "-m", "tests.console.rank_runner", str(workspace), str(batch), name,
                 f"--seed={seed}"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for seed, name in enumerate(annotators)
        }
        for name, process in self.processes.items():
            threading.Thread(target=self._read, args=(name, process), daemon=True).start()

    def _read(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put((name, line.strip()))
        self.lines.put((name, None))  # the end of its output

    def next_line(self, deadline: float) -> tuple[str, str]:
        """(annotator, line) of the next line any runner prints; fails past `deadline` or at an early end."""
        try:
            name, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no line from the rank runners in time; stderr: {self._errors()}")
        if line is None:
            pytest.fail(f"the rank runner of {name} ended early; stderr: {self._errors()}")
        return name, line

    def _errors(self) -> str:
        self.close()
        return " | ".join(p.stderr.read() for p in self.processes.values() if p.stderr and not p.stderr.closed)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)

    def __enter__(self) -> Runners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        for process in self.processes.values():
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def _reported(line: str) -> tuple[int, int, str, list[int]]:
    _, judgement_id, item_id, outcome, shown = line.split(" ", 4)
    return int(judgement_id), int(item_id), outcome, json.loads(shown)


def _check_consistent(store: Store, batch: int) -> None:
    """Nothing half-written: the database is sound and each item's verdict count
    matches its live verdicts."""
    with store.engine.connect() as connection:
        assert connection.execute(sql("PRAGMA integrity_check")).scalar_one() == "ok"
        rows = connection.execute(sql("SELECT id, verdicts FROM rankitem WHERE batch_id = :b"), {"b": batch}).all()
        counts = dict(rows)
    live: dict[int, int] = {}
    for judgement in store.feedback.live_judgements(batch_ids=[batch]):
        live[judgement.item_id] = live.get(judgement.item_id, 0) + 1
    assert counts == {item_id: live.get(item_id, 0) for item_id in counts}


@pytest.mark.slow  # rank screens in subprocesses, killed mid-batch
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill_after", [1, 6])
def test_sigkill_while_ranking_loses_no_reported_judgement(tmp_path: Path, kill_after: int) -> None:
    root = tmp_path / "ws"
    workspace = open_workspace(root)
    batch = make_rank_batch(workspace.store, prompts=40, k=2)
    workspace.close()

    deadline = time.monotonic() + 60
    with Runners(root, batch, ["ann"]) as runners:
        process = runners.processes["ann"]
        assert runners.next_line(deadline) == ("ann", "ready")
        reported = [_reported(runners.next_line(deadline)[1]) for _ in range(kill_after)]
        process.send_signal(signal.SIGKILL)  # mid-way through the next judgement, most likely
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    workspace = open_workspace(root, create=False)
    try:
        store = workspace.store
        rows = {r.id: r for r in store.feedback.judgements(batch_id=batch)}
        for judgement_id, item_id, outcome, shown in reported:
            row = rows[judgement_id]
            assert (row.item_id, row.outcome, row.shown) == (item_id, outcome, shown)
        # at most the judgement in flight when it was killed is there unreported
        assert len(rows) - len(reported) in (0, 1)
        _check_consistent(store, batch)
        # and the judged items are not served again
        served = store.feedback.next_item(batch_id=batch, annotator="ann")
        assert served is not None and served.id not in {r.item_id for r in rows.values()}
    finally:
        workspace.close()


# --- two annotators at once -------------------------------------------------------------------


@pytest.mark.slow  # two rank screens in subprocesses
@pytest.mark.timeout(180)
@pytest.mark.parametrize("needed", [1, 2])
def test_two_annotators_at_once_never_get_an_item_twice_and_lose_nothing(tmp_path: Path, needed: int) -> None:
    root = tmp_path / "ws"
    workspace = open_workspace(root)
    items = 16
    batch = make_rank_batch(workspace.store, prompts=items, k=2, needed=needed)
    workspace.close()

    annotators = ("ann", "bob")
    reported: dict[str, list[tuple[int, int, str, list[int]]]] = {name: [] for name in annotators}
    deadline = time.monotonic() + 120
    with Runners(root, batch, annotators) as runners:
        working = set(annotators)
        while working:
            name, line = runners.next_line(deadline)
            if line == "done":
                working.discard(name)
            elif line != "ready":
                reported[name].append(_reported(line))
        for process in runners.processes.values():
            assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""

    workspace = open_workspace(root, create=False)
    try:
        store = workspace.store
        rows = {r.id: r for r in store.feedback.judgements(batch_id=batch)}
        assert len(rows) == sum(len(r) for r in reported.values())  # every judgement reported, none extra
        for name, judged in reported.items():
            item_ids = [item_id for _, item_id, _, _ in judged]
            assert len(item_ids) == len(set(item_ids)), f"{name} was served an item twice"
            for judgement_id, item_id, outcome, shown in judged:
                row = rows[judgement_id]
                assert (row.annotator, row.item_id, row.outcome, row.shown) == (name, item_id, outcome, shown)
        judged_by = [item_id for judged in reported.values() for _, item_id, _, _ in judged]
        # each item got exactly the verdicts it needed: the claims kept a third from happening
        assert sorted(judged_by) == sorted(i.id for i in store_items(store, batch) for _ in range(needed))
        progress = store.feedback.progress(batch_id=batch)
        assert progress.done == progress.total == items * needed
        _check_consistent(store, batch)
        with store.engine.connect() as connection:
            assert connection.execute(sql_select(func.count()).select_from(ItemClaim.__table__)).scalar_one() == 0
    finally:
        workspace.close()


# --- choosing a batch ---------------------------------------------------------------------------


class PickerHarness(App[None]):
    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.chosen: list[int | None] = []

    def on_mount(self) -> None:
        self.push_screen(RankBatchesScreen(self.store, Annotation(self.store), needed=2),
                         callback=self.chosen.append)


async def test_the_batch_picker_offers_every_batch_and_makes_a_new_one_rankable(store: Store) -> None:
    ranked = make_rank_batch(store, prompts=3, k=2, name="ranked")
    prompt_ids = store.add_prompts([{"text": "fresh prompt"}])
    fresh = store.create_sample_batch(name="[b]fresh[/b]", settings={}, sources=["x"]).id
    store.add_samples([{"prompt_id": prompt_ids[0], "batch_id": fresh, "response": f"r{j}", "checkpoint": "x"}
                       for j in range(2)])
    app = PickerHarness(store)
    async with app.run_test(size=(100, 20)) as pilot:
        screen = app.screen
        assert isinstance(screen, RankBatchesScreen)
        await screen.workers.wait_for_complete()
        await pilot.pause()
        text = screen_text(app)
        assert f"#{fresh} [b]fresh[/b]   not ranked yet" in text
        assert f"#{ranked} ranked   3 items · 0/3 verdicts" in text
        await pilot.press("enter")  # the newest first: the fresh one
        await screen.workers.wait_for_complete()
        await pilot.pause()
        assert app.chosen == [fresh]
    assert store.feedback.progress(batch_id=fresh).items == 1
    assert store.feedback.progress(batch_id=fresh).total == 2  # needed=2 per item


async def test_the_batch_picker_shows_the_highlighted_batchs_annotators_and_their_quality(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=2, name="ranked")
    first = store.feedback.next_item(batch_id=batch, annotator="[i]alice[/i]")
    assert first is not None
    store.feedback.set_gold(item_id=first.id, ranking=list(first.shown))
    store.feedback.judge(item_id=first.id, annotator="[i]alice[/i]", outcome="b_better", shown=first.shown,
                         seconds=3.0)
    app = PickerHarness(store)
    async with app.run_test(size=(120, 20)) as pilot:
        screen = app.screen
        assert isinstance(screen, RankBatchesScreen)
        await screen.workers.wait_for_complete()
        await pilot.pause()
        await screen.workers.wait_for_complete()
        await pilot.pause()
        assert "[i]alice[/i]  1 judged · gold 0% of 1 · 3.0 s · both bad 0% · skips 0%" in screen_text(app)


async def test_progress_shows_the_batch_agreement_once_two_people_judged_it(store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=2, needed=2)
    seen_by_bob = store.feedback.next_item(batch_id=batch, annotator="bob")
    assert seen_by_bob is not None
    winner = seen_by_bob.shown[0]
    store.feedback.judge(item_id=seen_by_bob.id, annotator="bob", outcome="a_better", shown=seen_by_bob.shown)
    app = RankHarness(store, batch_id=batch, annotator="ann", stats_seconds=0.3)
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(app, pilot)
        item = app.shown[-1]
        assert item is not None and item.id == seen_by_bob.id
        await _press_and_wait(app, pilot, "1" if item.shown[0] == winner else "2")  # agrees with bob
        await app.wait_for(lambda: app.rank.agreement is not None)
        await pilot.pause()
        assert "you 1 · batch 2/4 verdicts · 2 annotators, agree 100% (1 item)" in screen_text(app)


async def test_an_active_batch_is_served_in_its_stored_order_and_shows_what_the_model_learned(
        store: Store) -> None:
    from engine.feedback.stored.active_state import SETTINGS_KEY, ActiveState

    batch = make_rank_batch(store, prompts=3, k=2)
    items = [item.id for item in store.feedback.batch_items(batch_id=batch)]
    store.feedback.set_serve_order(batch_id=batch, item_ids=[items[2], items[0], items[1]])
    state = ActiveState(judgements=12, heldout_accuracy=0.7, history=((8, 0.6), (12, 0.7)), trend="rising")
    store.feedback.set_batch_setting(batch_id=batch, key=SETTINGS_KEY, value=state.to_json())
    app = RankHarness(store, batch_id=batch, annotator="ann")
    async with app.run_test(size=(160, 30)) as pilot:
        await _started(app, pilot)
        item = app.shown[-1]
        assert item is not None and item.id == items[2]  # the top of the stored order, not position 0
        await app.wait_for(lambda: app.rank.learning is not None)
        await pilot.pause()
        assert "model 70% held out at 12 judgements, rising" in screen_text(app)


# --- snapshots ------------------------------------------------------------------------------------


def _after(*keys: str, judged: int = 0):
    """A run_before: the first item and progress shown, then `keys`, then (after `judged`
    judgements) the next item and its progress."""

    async def run_before(pilot) -> None:
        app: RankHarness = pilot.app
        await app.wait_for(lambda: bool(app.shown) and app.rank.progress is not None)
        await pilot.press(*keys)
        await app.wait_for(lambda: len(app.shown) > judged and app.rank.progress is not None
                           and app.rank.progress.mine == judged)
        await pilot.pause()

    return run_before


def test_snapshot_of_a_pair_after_a_vote(snap_compare, store: Store) -> None:
    batch = make_rank_batch(store, prompts=3, k=2, name="demo/sample",
                            responses=lambda i, j: f"Response {j} to prompt {i}. " * (3 + 4 * j))
    app = RankHarness(store, batch_id=batch, annotator="ann")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_after("1", judged=1))


def test_snapshot_of_four_responses_being_ordered(snap_compare, store: Store) -> None:
    batch = make_rank_batch(store, prompts=2, k=4, name="demo/sample",
                            responses=lambda i, j: f"Response {j} to prompt {i}. " * (2 + 3 * j))
    app = RankHarness(store, batch_id=batch, annotator="ann")
    assert snap_compare(app, terminal_size=(120, 36), run_before=_after("3", "1"))
