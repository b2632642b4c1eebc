"""`RankHelpScreen`: the rank screen's keys (`?`), and what happens to a judgement."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

PAIR = (
    ("1  ←", "A is better (A: left, or top when stacked)"),
    ("2  →", "B is better"),
    ("=", "a tie: both as good"),
    ("b", "both bad"),
    ("s", "skip: not judged, not served to you again (u brings it back)"),
)

RANKING = (
    ("1 … K", "type the responses' numbers best first: 3 1 4 shows as 3 > 1 > 4 > (2)"),
    ("⌫ backspace", "take back the last number typed"),
    ("enter", "submit the order (once K-1 are placed: the last is implied)"),
    ("=  b  s", "all tie, all bad, skip"),
)

ANY_ITEM = (
    ("u", "undo your last judgement in this batch and show its item again"),
    ("c", "comment on the item (kept with your judgement of it)"),
    ("n  p", "next / previous item in the batch; judging one you judged before replaces that judgement"),
    ("tab", "next pane: prompt, then each response (shift+tab: previous)"),
    ("↑ ↓  j k", "scroll the focused pane (shift+↑ ↓ too); pgup/pgdn, home/end"),
    ("J", "hand the rest of the batch to the demo judge (recorded as judge:demo, not as you)"),
    ("esc", "leave (items you were shown are given back)"),
    ("?", "this help"),
)

NOTES = (
    "Which side a response is on is shuffled per item (the same each time you see it), "
    "and which checkpoint wrote it stays hidden until you have voted: the line at the bottom "
    "then names the checkpoints of the item you just judged.\n"
    "Each judgement is saved before the next item appears: closing the console, or losing the "
    "terminal, loses at most the item on screen."
)


def _section(table: Table, title: str, rows: tuple[tuple[str, str], ...]) -> None:
    table.add_row(Text(title, style="bold"), "")
    for key, what in rows:
        table.add_row(Text(key), Text(what))
    table.add_row("", "")


class RankHelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    RankHelpScreen {
        align: center middle;
    }
    #rank-help-box {
        width: 90;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    #rank-help-scroll {
        height: auto;
        max-height: 30;
    }
    """

    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
        Binding("j,down", "scroll_down", show=False),
        Binding("k,up", "scroll_up", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        _section(table, "Two responses", PAIR)
        _section(table, "Three or more: put them in order", RANKING)
        _section(table, "Any item", ANY_ITEM)
        with Vertical(id="rank-help-box"):
            yield Static(Text("Keys: ranking", style="bold"), id="rank-help-title")
            with VerticalScroll(id="rank-help-scroll"):
                yield Static(table, id="rank-help-table")
                yield Static(Text(NOTES, style="dim"), id="rank-help-notes")
            yield Static(Text("esc or ? closes", style="dim"))

    def action_scroll_down(self) -> None:
        self.query_one("#rank-help-scroll", VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one("#rank-help-scroll", VerticalScroll).scroll_up()
