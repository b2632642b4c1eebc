"""`KeysScreen`: the keys of the screen beneath it (`?`), then the ones that work everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: keys that work on every screen, shown after the screen's own
EVERYWHERE = (
    ("?", "this list of keys"),
    ("ctrl+p  :", "command palette: any run, any screen"),
    ("p", "playground: answers from one or two checkpoints"),
    ("a", "annotate: rank a batch of responses side by side"),
    ("tab", "next pane (shift+tab: previous)"),
    ("j k  ↓ ↑", "down / up in lists, tables and logs"),
    ("esc", "back, or close what is open"),
    ("q", "quit; runs keep going (open again to re-attach)"),
)


class KeysScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
        Binding("j", "scroll_down", show=False),
        Binding("k", "scroll_up", show=False),
    ]

    def __init__(self, title: str, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__(id="keys")
        self.heading = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, description in self.keys:
            table.add_row(Text(key), Text(description))
        table.add_row("", "")
        for key, description in EVERYWHERE:
            table.add_row(Text(key), Text(description, style="dim"))
        with Vertical(id="keys-box"):
            yield Static(Text(f"Keys: {self.heading}", style="bold"), id="keys-title")
            with VerticalScroll(id="keys-scroll"):
                yield Static(table, id="keys-table")
            yield Static(Text("esc or ? closes", style="dim"), id="keys-hint")

    def action_scroll_down(self) -> None:
        self.query_one("#keys-scroll", VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one("#keys-scroll", VerticalScroll).scroll_up()
