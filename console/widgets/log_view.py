"""`LogView`: a run's log, following as lines arrive, shown exactly as written.

Lines go through `printable` (escape sequences become visible `\\e[...`) into
Textual's `Log`, which never parses markup: `[bold]` stays `[bold]`.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.binding import Binding
from textual.widgets import Log

from console.view_models import LogRow

from ..literal import printable
from .keys import SCROLL_KEYS

MAX_LINES = 20_000


def format_line(row: LogRow) -> list[str]:
    prefix = f"{row.time:%H:%M:%S} [{row.stage or 'run'}]"
    if row.stream == "stderr":
        prefix += " !"
    lines = printable(row.message).split("\n") or [""]
    return [f"{prefix} {lines[0]}", *(f"{' ' * len(prefix)} {line}" for line in lines[1:])]


class LogView(Log):
    DEFAULT_CSS = """
    LogView {
        height: 1fr;
    }
    """

    BINDINGS = [
        *SCROLL_KEYS,
        Binding("f", "toggle_follow", "Follow", tooltip="keep the newest lines in view"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, auto_scroll=True, id=id)
        self.following = True

    def append(self, rows: Sequence[LogRow]) -> None:
        lines = [line for row in rows for line in format_line(row)]
        if lines:
            self.write_lines(lines, scroll_end=self.following)

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self.scroll_end(animate=False)
        self.notify("log: following new lines" if self.following else "log: paused (f follows again)",
                    timeout=2)
