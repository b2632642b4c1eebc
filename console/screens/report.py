"""`ReportScreen`: a run's report (engine.recipe.report), refreshed while the run goes.

The same tables `rlhf report` prints: each stage's key numbers before and
after, the win rates of the policies against SFT (by the judge and by
people), and the arena's leaderboard. Opened with `R` on a run's screen or
from the command palette.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from ..headless import report_renderables
from ..widgets.key_bar import KeyBar
from .live import LiveScreen


class ReportScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the run"),
        Binding("j", "scroll(1)", show=False),
        Binding("k", "scroll(-1)", show=False),
    ]

    DEFAULT_CSS = """
    ReportScreen #report-body { padding: 0 1; }
    """

    def __init__(self, run_id: int) -> None:
        super().__init__(id=f"report-{run_id}")
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with VerticalScroll(id="report-scroll"):
            yield Static(Text("reading the run…", style="dim"), id="report-body")
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = f"report · run #{self.run_id}"
        super().on_mount()

    async def refresh_data(self) -> None:
        report = await self.rlhf.engine.report(self.run_id)
        self.query_one("#report-body", Static).update(Group(*report_renderables(report)))

    def action_scroll(self, direction: int) -> None:
        scroll = self.query_one("#report-scroll", VerticalScroll)
        scroll.scroll_down() if direction > 0 else scroll.scroll_up()

    def action_back(self) -> None:
        self.app.pop_screen()
