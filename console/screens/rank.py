"""The rank screen: a person judges a batch's responses, side by side, by keyboard.

A pair is judged with one key (1/2 or ←/→, = tie, b both bad, s skip); three
or more responses are put in order by typing their numbers best first, then
enter (see `RankingBar`). `u` undoes, `c` comments, `n`/`p` browse the batch
by position (judging an item judged before replaces that judgement), `?`
explains it all.

The store decides what a person sees, and the screen asks it only through
the engine (`engine.runtime.annotation`): `next_item` serves (and
claims) the next item this annotator should judge, with its responses in
this annotator's shuffled order; the screen records that order (`shown`)
with the judgement and names the checkpoints only after the vote.

Two rules shape the code:

- Durable before next. A judgement is committed (`Feedback.judge` returns
  after the commit) before the next item is shown, so killing the console
  loses at most the item on screen. Store calls are blocking SQLite, so they
  run on one worker thread of the screen's own, in the order they were
  asked for: a FIFO that keeps "judge, then serve the next" in order without
  locks.
- The next item is already there. While the person reads, the item after
  the one on screen is fetched (and claimed) on that thread; a verdict then
  costs one commit and a repaint. Progress and agreement are read on a
  second thread, after the item is shown, never in the way of a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header

from store import (
    FeedbackError,
    ItemView,
    JudgementOutcome,
    JudgementRead,
    NotFound,
    Progress,
    StoreError,
    ranking_members,
)

from ..literal import printable
from ..widgets.prompt_panel import PromptPanel
from ..widgets.ranking_bar import RankingBar, RankingDraft, order_text, ordinal
from ..widgets.response_panel import ResponsePanel
from ..widgets.responses_view import PanelContent, ResponsesView
from ..widgets.text_panel import TextPanel

if TYPE_CHECKING:
    from engine import Annotation
    from engine.feedback import Agreement
    from engine.feedback.stored.active_state import ActiveState

    from ..shell import ConsoleShell

#: batch id -> agreement between its annotators (None: cannot be told). Called on the stats
#: thread once two or more annotators judged the batch: first `stats_seconds` after the screen
#: opens, then no more often than every `stats_seconds` nor than AGREEMENT_SHARE of the time.
AgreementHook = Callable[[int], "Agreement | None"]

T = TypeVar("T")

#: the share of time the agreement between annotators may take on the stats thread
AGREEMENT_SHARE = 0.02

OUTCOME_WORDS = {
    JudgementOutcome.A_BETTER: "A better",
    JudgementOutcome.B_BETTER: "B better",
    JudgementOutcome.TIE: "tie",
    JudgementOutcome.BOTH_BAD: "both bad",
    JudgementOutcome.SKIPPED: "skipped",
}


# --- what the screen says (no Textual here) -------------------------------------------------


def default_annotator() -> str:
    """Who is judging when nobody said: the login name."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  no login name in some containers
        return "annotator"


def response_labels(count: int) -> list[str]:
    """A and B for a pair (what the outcomes are named after); 1..K for a ranking."""
    return ["A", "B"] if count == 2 else [str(i + 1) for i in range(count)]


def checkpoint_label(checkpoint: str | None, workspace_root: Path | None) -> str:
    """A checkpoint as a person reads it: inside the workspace, relative to it."""
    if not checkpoint:
        return "unknown"
    if workspace_root is not None:
        try:
            return str(Path(checkpoint).relative_to(workspace_root))
        except ValueError:
            pass
    return checkpoint


def outcome_words(item: ItemView, judgement: JudgementRead) -> Text:
    """'A better', 'tie', or for a ranking the order in the labels shown: '3 > 1 > 4 > 2'."""
    outcome = JudgementOutcome(judgement.outcome)
    if outcome is JudgementOutcome.RANKING:
        draft = RankingDraft(len(item.shown), [item.shown.index(s) for s in ranking_members(judgement.ranking)])
        return order_text(draft)
    words = OUTCOME_WORDS.get(outcome, outcome.value)
    if len(item.shown) > 2 and outcome in (JudgementOutcome.TIE, JudgementOutcome.BOTH_BAD):
        words = "all tie" if outcome is JudgementOutcome.TIE else "all bad"
    return Text(words)


def verdict_text(item: ItemView, judgement: JudgementRead) -> Text:
    """The annotator's judgement on record for the item on screen."""
    text = Text("you judged this: ", style="bold").append_text(outcome_words(item, judgement))
    if judgement.comment:
        text.append(" · comment: ", style="dim").append(printable(judgement.comment))
    text.append("   a new verdict replaces it", style="dim")
    return text


def reveal_text(item: ItemView, judgement: JudgementRead, workspace_root: Path | None) -> Text:
    """One line after a vote: which checkpoint wrote which response of the item just judged."""
    text = Text("last: ", style="bold")
    for index, (label, response) in enumerate(zip(response_labels(len(item.responses)), item.responses)):
        if index:
            text.append(", ")
        text.append(f"{label} = ", style="bold")
        text.append(printable(checkpoint_label(response.checkpoint, workspace_root)))
    text.append("  (you: ", style="dim").append_text(outcome_words(item, judgement)).append(")", style="dim")
    return text


def status_text(item: ItemView | None, progress: Progress | None, agreement: Agreement | None,
                learning: ActiveState | None = None) -> Text:
    """'item 13 of 10,000 · you 12 · batch 340/10,000 verdicts · 2 annotators, agree 82% (κ 0.64, 17 items)',
    and for a batch in active order ' · model 71% held out at 120 judgements, rising' (dim)."""
    text = Text()
    items = progress.items if progress is not None else None
    if item is not None:
        text.append(f"item {item.position + 1:,}" + (f" of {items:,}" if items is not None else ""), style="bold")
    if progress is not None:
        if text:
            text.append(" · ", style="dim")
        text.append(f"you {progress.mine:,}")
        text.append(" · ", style="dim")
        text.append(f"batch {progress.done:,}/{progress.total:,} verdicts")
        if progress.annotators > 1:
            text.append(f" · {progress.annotators} annotators", style="dim")
            if agreement is not None and agreement.items and agreement.percent is not None:
                kappa = "" if agreement.kappa is None else f"κ {agreement.kappa:.2f}, "
                compared = f"{agreement.items:,} item{'s' if agreement.items != 1 else ''}"
                text.append(f", agree {agreement.percent:.0f}% ({kappa}{compared})")
    if learning is not None:
        if text:
            text.append(" · ", style="dim")
        if learning.heldout_accuracy is None:
            text.append(f"active order, {learning.judgements:,} judgements in", style="dim")
        else:
            trend = f", {learning.trend}" if learning.trend else ""
            text.append(f"model {learning.heldout_accuracy:.0%} held out at {learning.judgements:,} judgements{trend}",
                        style="dim")
    return text


def done_text(batch_name: str, progress: Progress | None) -> Text:
    text = Text(f"Nothing left for you in batch {printable(batch_name)}.\n\n", style="bold")
    if progress is not None:
        text.append(f"You judged {progress.mine:,} of its {progress.items:,} items; "
                    f"the batch has {progress.done:,} of the {progress.total:,} verdicts it needs")
        text.append(f" from {progress.annotators} annotator{'s' if progress.annotators != 1 else ''}.\n"
                    if progress.annotators else ".\n")
    text.append("\nItems others still hold, or that need a verdict from someone else, are not served to you. "
                "u undoes your last judgement, n/p browse the batch, esc leaves.", style="dim")
    return text


# --- the screen -------------------------------------------------------------------------------


class RankScreen(Screen[None]):
    """Judge batch `batch_id` as `annotator`, through the engine's `annotation`."""

    class ItemShown(Message):
        """An item (None: nothing left) is on screen, painted: posted after the refresh that shows it."""

        def __init__(self, item: ItemView | None) -> None:
            super().__init__()
            self.item = item

    class Judged(Message):
        """A judgement was committed to the store (posted before the next item is shown)."""

        def __init__(self, judgement: JudgementRead, item: ItemView) -> None:
            super().__init__()
            self.judgement = judgement
            self.item = item

    class ProgressShown(Message):
        """Progress (and agreement) were read and shown."""

    class Settled(Message):
        """A judgement, undo, comment or move has finished (or failed, with a notification)."""

    BINDINGS = [
        *[Binding(str(n), f"digit({n})", f"choose {n}", show=False) for n in range(1, 10)],
        Binding("left", "digit(1)", "A better", show=False),
        Binding("right", "digit(2)", "B better", show=False),
        Binding("equals_sign", "verdict('tie')", "tie", show=False),
        Binding("b", "verdict('both_bad')", "both bad", show=False),
        Binding("s", "verdict('skipped')", "skip", show=False),
        Binding("enter", "submit_ranking", "submit the order", show=False),
        Binding("backspace", "take_back", "take back", show=False),
        Binding("u", "undo", "undo", show=False),
        Binding("c", "comment", "comment", show=False),
        Binding("n", "step(1)", "next", show=False),
        Binding("p", "step(-1)", "previous", show=False),
        Binding("shift+down", "scroll_focused(1)", "scroll down", show=False),
        Binding("shift+up", "scroll_focused(-1)", "scroll up", show=False),
        Binding("question_mark", "help", "help", show=False),
        Binding("J", "hand_to_judge", "let the demo judge rank the rest", show=False),
        Binding("escape", "back", "leave", show=False),
    ]

    AUTO_FOCUS = "ResponsePanel"  # the first response has the focus once it is there, not the prompt

    DEFAULT_CSS = """
    RankScreen #rank-status, RankScreen #rank-reveal {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    RankScreen #rank-done {
        height: 1fr;
        padding: 1 2;
        display: none;
    }
    RankScreen.-done #rank-done {
        display: block;
    }
    RankScreen.-done PromptPanel, RankScreen.-done ResponsesView {
        display: none;
    }
    """

    def __init__(
        self,
        annotation: Annotation,
        *,
        batch_id: int,
        annotator: str,
        needed: int = 1,
        workspace_root: Path | None = None,
        agreement: AgreementHook | None = None,
        stats_seconds: float = 5.0,
    ) -> None:
        super().__init__(id="rank")
        self.annotation = annotation
        self.session = annotation.session(batch_id=batch_id, annotator=annotator)
        self.batch_id = batch_id
        self.annotator = annotator
        self.needed = needed
        self.workspace_root = workspace_root
        self.agreement_hook = agreement if agreement is not None else annotation.people_agreement
        self.stats_seconds = stats_seconds
        self.batch_name = f"#{batch_id}"

        self.item: ItemView | None = None
        self.draft: RankingDraft | None = None  # for items of three or more responses
        self.progress: Progress | None = None
        self.agreement: Agreement | None = None
        self.learning: ActiveState | None = None  # the active order's job, when it serves this batch
        self.reveal = Text()
        self.ready = False  # the first item (or the done message) has been shown
        self._shown_at = time.monotonic()
        self._last_position: int | None = None  # for `p` once nothing is left
        self._comments: dict[int, str | None] = {}  # typed before the item was judged
        self._busy = False  # a judgement, undo or move is under way: keys wait for it
        self._prefetch: tuple[int, asyncio.Future[ItemView | None]] | None = None
        self._stats_busy = False
        self._stats_again = False
        # Not at once: the first seconds on a screen are the first key presses, and it is slow at 10,000.
        self._agreement_due = time.monotonic() + stats_seconds
        self._agreement_error: str | None = None
        # One thread for everything that writes or must follow a write (FIFO keeps the order);
        # another for progress and agreement, which only read (WAL: they never wait for a write).
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank-store")
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank-stats")

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield TextPanel(id="rank-status")
        yield PromptPanel(id="rank-prompt")
        yield ResponsesView(id="rank-responses")
        yield TextPanel(id="rank-done")
        yield RankingBar(id="rank-bar")
        yield TextPanel(id="rank-reveal")

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = f"rank · batch #{self.batch_id} · {printable(self.annotator)}"
        self.query_one(ResponsesView).fit(self.app.size.width)
        self.query_one("#rank-status", TextPanel).set_text(Text("loading the batch…", style="dim"))
        self._act(self._open())
        self.set_interval(self.stats_seconds, self._request_stats)

    def on_resize(self, event: events.Resize) -> None:
        self.query_one(ResponsesView).fit(event.size.width)

    # --- the store, off the UI thread -------------------------------------------------------------

    def _write(self, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run an annotation call (blocking SQLite) on the screen's FIFO thread, after everything asked before it."""
        return asyncio.wrap_future(self._writes.submit(partial(call, *args, **kwargs)))

    def _act(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a judgement, undo or move; one at a time. A key pressed meanwhile rings
        the bell rather than acting on an item the person has not seen yet."""
        if self._busy:
            work.close()
            self.app.bell()
            return
        self._busy = True
        self.run_worker(self._guarded(work), group="rank", exit_on_error=False)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except StoreError as exc:
            self.notify(printable(str(exc)), severity="error", markup=False, timeout=8)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  shown, never fatal: the judgements so far are saved
            self.notify(printable(f"{type(exc).__name__}: {exc}"), title="unexpected error",
                        severity="error", markup=False, timeout=8)
        finally:
            self._busy = False
            self.post_message(self.Settled())

    async def _open(self) -> None:
        try:
            # A sample batch becomes rankable on first use (does nothing when it has items).
            await self._write(self.annotation.make_rankable, batch_id=self.batch_id, needed=self.needed)
        except (NotFound, FeedbackError) as exc:
            self.set_class(True, "-done")
            self.query_one("#rank-done", TextPanel).set_text(
                Text(f"This batch cannot be ranked: {printable(str(exc))}", style="bold red"))
            self.query_one("#rank-status", TextPanel).set_text(Text())
            return
        name = await self._write(self.session.batch_name)
        if name is not None:
            self.batch_name = name
            self.sub_title = f"rank · {printable(name)} (#{self.batch_id}) · {printable(self.annotator)}"
        self._show(await self._write(self.session.next_item))

    # --- showing an item ---------------------------------------------------------------------

    def _show(self, item: ItemView | None) -> None:
        """Put `item` on screen (None: the done message) and start fetching the one after it."""
        self.item = item
        self.ready = True
        self._shown_at = time.monotonic()
        self.set_class(item is None, "-done")
        if item is None:
            self.draft = None
            self._prefetch = None
            self.query_one("#rank-done", TextPanel).set_text(done_text(self.batch_name, self.progress))
            self.query_one(RankingBar).show_done()
        else:
            self._last_position = item.position
            self.draft = RankingDraft(len(item.responses)) if len(item.responses) > 2 else None
            self.query_one(PromptPanel).show(f"prompt · item {item.position + 1:,}", item.prompt)
            self._show_responses()
            self._show_bar()
            if not isinstance(self.focused, (ResponsePanel, PromptPanel)):
                # After the refresh: panels made for this item are mounted by then.
                self.call_after_refresh(self._focus_first_response)
            self._prefetch = (item.id, self._write(
                self.session.next_item, after_position=item.position, exclude=[item.id]))
        self.query_one("#rank-reveal", TextPanel).set_text(self.reveal)
        self._show_status()
        self._request_stats()
        self.call_after_refresh(self._painted, item)

    def _painted(self, item: ItemView | None) -> None:
        self.post_message(self.ItemShown(item))
        # The console decides when Python collects garbage (RlhfApp.first_screen_loaded): a small
        # collection now, while the person reads, rather than a big one during a later key press.
        collect = getattr(self.app, "collect_garbage", None)
        if collect is not None:
            collect()

    def _show_responses(self) -> None:
        item = self.item
        assert item is not None
        mine = item.mine
        voted = mine is not None and JudgementOutcome(mine.outcome).is_verdict
        places = self._places()
        contents = []
        for index, (label, response) in enumerate(zip(response_labels(len(item.responses)), item.responses)):
            notes = []
            place = places.get(index)
            if place is not None:
                notes.append("better" if self.draft is None else ordinal(place))
            if voted:  # already judged by this annotator: nothing left to hide
                notes.append(checkpoint_label(response.checkpoint, self.workspace_root))
            contents.append(PanelContent(label=label, text=response.text, meta=response.meta,
                                         note=" · ".join(notes), chosen=place == 1))
        self.query_one(ResponsesView).show(contents)

    def _focus_first_response(self) -> None:
        panels = self.query_one(ResponsesView).panels
        if panels and self.item is not None:
            panels[0].focus()

    def _places(self) -> dict[int, int]:
        """Response index -> place (1 = best): the order being typed, else the judgement on record."""
        item = self.item
        assert item is not None
        if self.draft is not None and self.draft.placed:
            return {index: place for place, index in enumerate(self.draft.order(), 1)}
        mine = item.mine
        if mine is None or not mine.ranking or mine.outcome == JudgementOutcome.SKIPPED:
            return {}
        if self.draft is None:  # a pair: only the better one is marked
            return {item.shown.index(ranking_members(mine.ranking)[0]): 1}
        return {item.shown.index(sample): place for place, sample in enumerate(ranking_members(mine.ranking), 1)}

    def _show_bar(self) -> None:
        item = self.item
        assert item is not None
        verdict = verdict_text(item, item.mine) if item.mine is not None else None
        pending = self._comments.get(item.id)
        if verdict is None and pending:
            verdict = Text("comment, saved with your verdict: ", style="dim").append(printable(pending))
        bar = self.query_one(RankingBar)
        if self.draft is None:
            bar.show_pair(verdict)
        else:
            bar.show_ranking(self.draft, verdict)

    def _show_status(self) -> None:
        self.query_one("#rank-status", TextPanel).set_text(status_text(self.item, self.progress, self.agreement,
                                                                                self.learning))
        if self.item is None and self.ready:
            self.query_one("#rank-done", TextPanel).set_text(done_text(self.batch_name, self.progress))

    # --- progress and agreement (a second thread, after the item is shown) ---------------------------

    def _request_stats(self) -> None:
        if self._stats_busy:
            self._stats_again = True  # read once more when the read in flight ends
            return
        self._stats_busy = True
        self.run_worker(self._read_stats(), group="rank-stats", exit_on_error=False)

    async def _read_stats(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._stats_again = False
                progress = await loop.run_in_executor(
                    self._reads, self.session.progress)
                if progress.annotators > 1 and time.monotonic() >= self._agreement_due:
                    started = time.monotonic()
                    self.agreement = await self._read_agreement()
                    # It reads every live judgement of the batch (about a second at 10,000, mostly Python,
                    # so it competes with key presses for the GIL): at most AGREEMENT_SHARE of the time.
                    took = time.monotonic() - started
                    self._agreement_due = time.monotonic() + max(self.stats_seconds, took / AGREEMENT_SHARE)
                self.progress = progress
                self.learning = await loop.run_in_executor(self._reads, self.session.active_state)
                self._show_status()
                self.post_message(self.ProgressShown())
                if not self._stats_again:
                    break
        except StoreError as exc:
            self.notify(printable(str(exc)), severity="error", markup=False)
        finally:
            self._stats_busy = False

    async def _read_agreement(self) -> Agreement | None:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reads, self.agreement_hook, self.batch_id)
        except Exception as exc:  # noqa: BLE001  a statistic is not worth a crash: say so once, carry on
            message = f"agreement: {exc}"
            if message != self._agreement_error:
                self._agreement_error = message
                self.notify(printable(message), severity="warning", markup=False)
            return None

    # --- verdicts -------------------------------------------------------------------------------

    def action_digit(self, number: int) -> None:
        item = self.item
        if item is None or self._busy:
            self.app.bell()
            return
        if self.draft is None:  # a pair: 1 or 2 decides at once
            if number in (1, 2):
                outcome = JudgementOutcome.A_BETTER if number == 1 else JudgementOutcome.B_BETTER
                self._act(self._judge(item, outcome))
            else:
                self.app.bell()
            return
        if not self.draft.place(number - 1):
            self.app.bell()
            return
        self._show_responses()
        self._show_bar()

    def action_take_back(self) -> None:
        if self.draft is None or not self.draft.back():
            self.app.bell()
            return
        self._show_responses()
        self._show_bar()

    def action_submit_ranking(self) -> None:
        item, draft = self.item, self.draft
        if item is None or draft is None or not draft.complete:
            self.app.bell()
            return
        ranking = [item.shown[index] for index in draft.order()]
        self._act(self._judge(item, JudgementOutcome.RANKING, ranking))

    def action_verdict(self, outcome: str) -> None:
        if self.item is None:
            self.app.bell()
            return
        self._act(self._judge(self.item, JudgementOutcome(outcome)))

    async def _judge(self, item: ItemView, outcome: JudgementOutcome, ranking: list[int] | None = None) -> None:
        previous = item.mine
        # An edit keeps the comment and flags it had, unless a new comment was typed.
        comment = self._comments.get(item.id, previous.comment if previous else None)
        row = await self._write(
            self.session.judge, item, outcome, ranking=ranking or [], comment=comment,
            flags=list(previous.flags) if previous else [], seconds=round(time.monotonic() - self._shown_at, 3),
        )
        # Committed: only now may anything else appear.
        self._comments.pop(item.id, None)
        self.post_message(self.Judged(row, item))
        self.reveal = reveal_text(item, row, self.workspace_root) if outcome.is_verdict else Text()
        self._show(await self._next_after(item))

    async def _next_after(self, item: ItemView) -> ItemView | None:
        """The item to show after `item` was judged: the prefetched one when it was
        fetched for `item` (and found one), else a fresh query."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None and prefetch[0] == item.id:
            try:
                # shield: a worker cancelled while waiting must not cancel the fetch (its claim lands anyway)
                following = await asyncio.shield(prefetch[1])
            except StoreError:
                following = None  # fetched again below
            if following is not None:
                return following
        # Nothing was prefetched, or nothing was found before this verdict (a claim may have expired since).
        return await self._write(self.session.next_item, after_position=item.position, exclude=[item.id])

    # --- undo, comment, moving about -------------------------------------------------------------

    def action_undo(self) -> None:
        self._act(self._undo())

    async def _undo(self) -> None:
        withdrawn = await self._write(self.session.undo)
        if withdrawn is None:
            self.notify("Nothing to undo in this batch.", markup=False)
            return
        item = await self._write(self.session.get_item, withdrawn.item_id)
        self.reveal = Text(f"undone: your judgement of item {item.position + 1:,} "
                           f"({outcome_words(item, withdrawn).plain}); judge it again, or move on with n",
                           style="yellow")
        self._show(item)

    def action_comment(self) -> None:
        item = self.item
        if item is None or self._busy:
            self.app.bell()
            return
        from .rank_comment import CommentScreen

        existing = self._comments.get(item.id) or (item.mine.comment if item.mine is not None else None)
        self.app.push_screen(CommentScreen(existing), callback=lambda text: self._commented(item, text))

    def _commented(self, item: ItemView, text: str | None) -> None:
        if text is None or item is not self.item:
            return  # cancelled, or the screen moved on meanwhile
        if item.mine is not None:  # judged already: the comment joins that judgement now
            self._act(self._save_comment(item, text or None))
            return
        self._comments[item.id] = text or None  # saved with the verdict, in the same transaction
        self._show_bar()

    async def _save_comment(self, item: ItemView, comment: str | None) -> None:
        row = await self._write(self.session.comment, item.id, comment)
        if self.item is item:
            self.item = replace(item, mine=row)
            self._show_bar()
        self.notify("Comment saved." if comment else "Comment removed.", markup=False)

    def action_step(self, delta: int) -> None:
        self._act(self._step(delta))

    async def _step(self, delta: int) -> None:
        if self.item is not None:
            position = self.item.position + delta
        elif delta < 0 and self._last_position is not None:
            position = self._last_position  # from the done message back to the last item seen
        else:
            self.app.bell()
            return
        item = await self._write(self.session.item_at, position)
        if item is None:
            self.notify("That is the " + ("last" if delta > 0 else "first") + " item of the batch.", markup=False)
            return
        self.reveal = Text()
        self._show(item)

    def action_scroll_focused(self, direction: int) -> None:
        pane = self.focused if isinstance(self.focused, (ResponsePanel, PromptPanel)) else None
        if pane is None:
            panels = self.query_one(ResponsesView).panels
            pane = panels[0] if panels else None
        if pane is not None:
            if direction > 0:
                pane.scroll_down(animate=False)
            else:
                pane.scroll_up(animate=False)

    def action_hand_to_judge(self) -> None:
        """The rest of the batch to the demo judge (the demo's "rank a few, let the judge do the rest"):
        an engine job that the console app submits (`ConsoleShell.judge_rest_of_batch`), recorded as
        judge:demo, never as this annotator."""
        # The one thing this screen asks of the console app; a bare app hosting the screen (the
        # tests' RankHarness) has no engine to run the judge with.
        if not hasattr(self.app, "judge_rest_of_batch"):
            self.notify("The judge needs the console's engine (open it with rlhf rank).", markup=False)
            return
        shell = cast("ConsoleShell", self.app)
        from .confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                shell.judge_rest_of_batch(self.batch_id)

        question = Text(f"Let the demo judge rank the items of batch #{self.batch_id} that still need a verdict? "
                        "They are recorded as judge:demo, not as you; the item on your screen "
                        "(and the next one, already loaded) stay yours.")
        self.app.push_screen(ConfirmScreen(question, yes="Hand to the judge", no="Keep ranking"), callback=answered)

    def action_help(self) -> None:
        from .rank_help import RankHelpScreen

        self.app.push_screen(RankHelpScreen())

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()

    # --- leaving -------------------------------------------------------------------------------

    async def on_unmount(self) -> None:
        # Claims go back after everything queued (a prefetch would otherwise claim after the release).
        release = self._writes.submit(self.session.release)
        self._writes.shutdown(wait=False)
        self._reads.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):  # claims expire by themselves (store.CLAIM_TTL)
            await asyncio.wrap_future(release)
