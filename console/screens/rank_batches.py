"""`RankBatchesScreen`: choose the sample batch to rank when none was named.

Batches that already have rank items come with their progress; a sample
batch without items is offered too, and choosing it makes it rankable first,
through the engine (`Annotation.make_rankable`: one item per prompt, holding
its responses). Batches are read through the read API (`store.reads.StoreReader`).
The highlighted batch's annotators are shown under the hint with their
quality (`Annotation.quality`: gold accuracy, agreement, pace, both bad, skips).
Dismissed with the chosen batch id, or None (esc).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header, OptionList
from textual.widgets.option_list import Option

from store import StoreError

from ..literal import printable
from ..widgets.keys import CURSOR_KEYS
from ..widgets.text_panel import TextPanel

if TYPE_CHECKING:
    from engine import Annotation
    from engine.feedback.quality import AnnotatorQuality
    from store import RankBatch
    from store.reads import StoreReader


@dataclass(frozen=True)
class BatchChoice:
    id: int
    name: str
    rank: RankBatch | None  # None: no rank items yet


def read_batch_choices(reads: StoreReader) -> list[BatchChoice]:
    """Every sample batch, newest first, with its ranking progress when it has items."""
    ranked = {batch.id: batch for batch in reads.feedback.rank_batches() if batch.items}
    batches = reads.list_sample_batches()
    return [BatchChoice(id=b.id, name=b.name, rank=ranked.get(b.id)) for b in reversed(batches)]


def choice_label(choice: BatchChoice) -> Text:
    text = Text(f"#{choice.id} ", style="dim").append(printable(choice.name), style="bold")
    if choice.rank is None:
        text.append("   not ranked yet: enter makes one item per prompt", style="dim")
    else:
        rank = choice.rank
        text.append(f"   {rank.items:,} items · {rank.done:,}/{rank.total:,} verdicts")
        if rank.total and rank.done >= rank.total:
            text.append(" · done", style="green")
    return text


def quality_text(qualities: list[AnnotatorQuality]) -> Text:
    """One line per annotator: 'alice  40 judged · gold 95% of 4 · agrees 88% · 6.1 s · both bad 5% · skips 2%'."""
    text = Text()
    for q in qualities:
        text.append("\n").append(printable(q.annotator), style="bold").append(f"  {q.verdicts:,} judged")
        if q.gold_accuracy is not None:
            text.append(f" · gold {q.gold_accuracy:.0%} of {q.gold_verdicts}")
        if q.agreement is not None:
            text.append(f" · agrees {q.agreement:.0%}")
        if q.median_seconds is not None:
            text.append(f" · {q.median_seconds:.1f} s")
        text.append(f" · both bad {q.both_bad_share:.0%} · skips {q.skip_share:.0%}", style="dim")
    return text


class BatchList(OptionList):
    BINDINGS = CURSOR_KEYS


class RankBatchesScreen(Screen[int | None]):
    BINDINGS = [Binding("escape", "cancel", "Back")]

    DEFAULT_CSS = """
    RankBatchesScreen #rank-batches-hint {
        padding: 0 1;
    }
    RankBatchesScreen BatchList {
        height: 1fr;
    }
    """

    HINT = "Choose a batch to rank: enter opens it, esc goes back."

    def __init__(self, reads: StoreReader, annotation: Annotation, *, needed: int = 1) -> None:
        super().__init__(id="rank-batches")
        self.reads = reads
        self.annotation = annotation
        self.needed = needed
        self.choices: list[BatchChoice] = []
        self._making = False

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield TextPanel(id="rank-batches-hint")
        yield BatchList(id="rank-batch-list")

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = "rank: choose a batch"
        self._hint(Text("reading the sample batches…", style="dim"))
        self.run_worker(self._load(), group="rank-batches", exit_on_error=False)

    async def _load(self) -> None:
        try:
            self.choices = await asyncio.to_thread(read_batch_choices, self.reads)
        except StoreError as exc:
            self._hint(Text(printable(str(exc)), style="bold red"))
            return
        options = self.query_one(BatchList)
        options.clear_options()
        options.add_options([Option(choice_label(c), id=str(c.id)) for c in self.choices])
        if not self.choices:
            self._hint(Text("No sample batches yet: a sample stage (or `rlhf generate`) makes them.", style="bold"))
            return
        self._hint(Text(self.HINT, style="dim"))
        options.highlighted = 0
        options.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        choice = next((c for c in self.choices if str(c.id) == event.option.id), None)
        if choice is not None and choice.rank is not None and not self._making:
            self.run_worker(self._show_quality(choice.id), group="rank-quality", exclusive=True, exit_on_error=False)

    async def _show_quality(self, batch_id: int) -> None:
        try:
            qualities = await asyncio.to_thread(self.annotation.quality, [batch_id])
        except StoreError as exc:
            self._hint(Text(printable(str(exc)), style="bold red"))
            return
        self._hint(Text(self.HINT, style="dim").append_text(quality_text(qualities)))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is None or self._making:
            return
        choice = next(c for c in self.choices if str(c.id) == event.option.id)
        if choice.rank is not None:
            self.dismiss(choice.id)
            return
        self._making = True
        self._hint(Text(f"making batch {printable(choice.name)} rankable…", style="dim"))
        self.run_worker(self._make_rankable(choice), group="rank-batches", exit_on_error=False)

    async def _make_rankable(self, choice: BatchChoice) -> None:
        try:
            await asyncio.to_thread(self.annotation.make_rankable, batch_id=choice.id, needed=self.needed)
        except StoreError as exc:  # e.g. no prompt with two responses: say so, let them choose another
            self._hint(Text(printable(str(exc)), style="bold red"))
            return
        finally:
            self._making = False
        self.dismiss(choice.id)

    def _hint(self, text: Text) -> None:
        self.query_one("#rank-batches-hint", TextPanel).set_text(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
