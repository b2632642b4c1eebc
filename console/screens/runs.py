"""The runs screen: every run, live, with what it is doing; the console's home.

`/` filters as you type, `space` marks runs, `c` compares the marked ones,
`enter` opens one; `n` starts a new run; `x` cancels (after asking) and `r`
resumes the run under the cursor.
"""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Input, Static

from console.view_models import RunRow, RunsModel

from ..literal import printable
from ..widgets.key_bar import KeyBar
from ..widgets.runs_table import RunsTable
from ..widgets.system_panel import SystemPanel
from .live import LiveScreen

EMPTY = "No runs yet. Press n to start one from a template or a spec file (or run `rlhf demo`)."


class RunsScreen(LiveScreen):
    READ_AFTER_LAYOUT = False  # no chart: read at once, for the fastest first screen

    BINDINGS = [
        Binding("slash", "filter", "Filter", tooltip="filter runs as you type (name, status, stage)"),
        Binding("c", "compare", "Compare", tooltip="compare the marked runs: one metric overlaid, config diff"),
        Binding("n", "new_run", "New", tooltip="start a run from a template or a spec file"),
        Binding("x", "cancel_run", "Cancel run", tooltip="cancel the run under the cursor (asks first)"),
        Binding("r", "resume_run", "Resume", tooltip="resume the run under the cursor from its last checkpoint"),
        Binding("s", "toggle_system", "System", tooltip="show or hide CPU, memory and GPU use"),
        Binding("escape", "clear", "Clear", show=False, tooltip="clear the filter, then the marks"),
    ]

    def __init__(self) -> None:
        super().__init__(id="runs")
        self.model: RunsModel | None = None
        self.rows: list[RunRow] = []
        self._listed = False  # the first read lists the runs only; sparklines come next

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Input(placeholder="filter: words in the name, status or stage (esc clears)", id="filter",
                    compact=True)
        yield RunsTable(id="runs-table")
        yield Static(Text(EMPTY, style="dim"), id="runs-empty")
        yield SystemPanel(self.rlhf.sampler, id="system")
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = self.rlhf.workspace_label
        self.model = RunsModel(self.rlhf.engine, clock=self.rlhf.clock)
        self.query_one("#filter").display = False
        self.query_one("#runs-empty").display = False
        self.query_one(RunsTable).focus()
        super().on_mount()

    # --- data -----------------------------------------------------------------------

    async def refresh_data(self) -> None:
        assert self.model is not None
        first = not self._listed
        self._listed = True
        self.rows = await self.model.refresh(trends=not first)
        self.rlhf.known_runs = self.rows
        self._show()
        if first and self.rows:
            self.request_refresh()  # the sparklines, right after the runs are on screen
            # ... painted first: the sparklines' reads import the store's ORM, whose import
            # would compete with the first frame for the interpreter.
            await self._painted()

    async def _painted(self) -> None:
        """Until the screen has been refreshed (painted) with what was just shown."""
        shown: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def painted() -> None:
            if not shown.done():
                shown.set_result(None)

        self.call_after_refresh(painted)
        await shown

    def is_quiet(self) -> bool:
        return bool(self.rows) and not any(r.status.is_active for r in self.rows)

    def _show(self) -> None:
        table = self.query_one(RunsTable)
        text = self.query_one("#filter", Input).value
        rows = [r for r in self.rows if r.matches(text)] if text.strip() else self.rows
        table.marked &= {r.id for r in self.rows}
        table.show(rows, self.rlhf.clock())
        empty = self.query_one("#runs-empty", Static)
        empty.display = not rows
        if not self.rows:
            empty.update(Text(EMPTY, style="dim"))
        elif not rows:
            empty.update(Text(printable(f"No run matches '{text}'. esc clears the filter."), style="dim"))

    # --- filter ---------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._show()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one(RunsTable).focus()
            if not event.value.strip():
                event.input.display = False

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        table = self.query_one(RunsTable)
        if box.value or box.display:
            box.value = ""
            box.display = False
            table.focus()
            self._show()
        elif table.marked:
            table.clear_marks()

    # --- acting on runs ---------------------------------------------------------------

    def _current(self) -> RunRow | None:
        row = self.query_one(RunsTable).current_row
        if row is None:
            self.notify("no run selected", severity="warning")
        return row

    def on_data_table_row_selected(self, event: RunsTable.RowSelected) -> None:
        if event.row_key.value is not None and event.row_key.value.isdigit():
            self.rlhf.open_run(int(event.row_key.value))

    def action_compare(self) -> None:
        table = self.query_one(RunsTable)
        marked = [r.id for r in self.rows if r.id in table.marked]
        if len(marked) < 2:
            self.notify("mark at least two runs with space, then press c", severity="warning")
            return
        self.rlhf.compare(sorted(marked))

    def action_new_run(self) -> None:
        self.rlhf.new_run()

    def action_cancel_run(self) -> None:
        if (row := self._current()) is not None:
            self.rlhf.cancel_run(row.id, row.name)

    def action_resume_run(self) -> None:
        if (row := self._current()) is not None:
            self.rlhf.resume_run(row.id)

    def action_toggle_system(self) -> None:
        panel = self.query_one(SystemPanel)
        panel.display = not panel.display
        if panel.display:
            panel.sample()
