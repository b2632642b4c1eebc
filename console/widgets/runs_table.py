"""`RunsTable`: every run with its status, stage, progress, ETA and a sparkline.

Rows are keyed by run id and updated in place, so the cursor stays on its
run while the list refreshes. `space` marks runs for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from console.view_models import STATUS_STYLES, RunRow, ago, duration, fmt_value, status_label

from ..literal import printable
from .cells import progress_cell, sparkline
from .keys import CURSOR_KEYS

#: (key, label, width) at 80 columns; more columns from WIDE_FROM on
NARROW = (
    ("id", "#", 4), ("name", "NAME", 13), ("status", "STATUS", 11), ("stage", "STAGE", 8),
    ("progress", "PROGRESS", 9), ("eta", "ETA", 5), ("trend", "TREND", 15),
)
WIDE = (
    ("id", "#", 5), ("name", "NAME", 24), ("status", "STATUS", 11), ("stage", "STAGE", 16),
    ("progress", "PROGRESS", 24), ("eta", "ETA", 7), ("metric", "METRIC", 16), ("trend", "TREND", 20),
    ("created", "CREATED", 9),
)
WIDE_FROM = 130
MARK = "◆"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class RunsTable(DataTable[Text]):
    DEFAULT_CSS = """
    RunsTable {
        height: 1fr;
    }
    """

    BINDINGS = [
        *CURSOR_KEYS,
        Binding("enter", "select_cursor", "Open", tooltip="open the run under the cursor"),
        Binding("space", "toggle_mark", "Mark", tooltip="mark runs to compare (c)"),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    class MarksChanged(Message):
        def __init__(self, marked: frozenset[int]) -> None:
            super().__init__()
            self.marked = marked

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.marked: set[int] = set()
        self._rows: list[RunRow] = []
        self._now: datetime | None = None
        self._layout: tuple[tuple[str, str, int], ...] = ()
        self._shown: dict[int, dict[str, Text]] = {}  # the cells on screen, by run

    # --- content ------------------------------------------------------------

    def show(self, rows: Sequence[RunRow], now: datetime) -> None:
        """Show these rows (already filtered), keeping the cursor on its run."""
        self._now = now
        layout = WIDE if self.size.width >= WIDE_FROM else NARROW
        same_rows = [r.id for r in rows] == [r.id for r in self._rows]
        self._rows = list(rows)
        if layout != self._layout:
            self._layout = layout
            self.clear(columns=True)
            for key, label, width in layout:
                self.add_column(Text(label, style="bold"), key=key, width=width)
            same_rows = False
        if same_rows:
            for row in rows:  # only what changed: a refresh every second touches few cells
                before = self._shown.get(row.id, {})
                for key, value in self._cells(row).items():
                    if before.get(key) != value:
                        self.update_cell(str(row.id), key, value)
                        before[key] = value
                self._shown[row.id] = before
            return
        current = self.current_run_id
        self.clear()
        self._shown = {}
        for row in rows:
            cells = self._cells(row)
            self._shown[row.id] = cells
            self.add_row(*(cells[key] for key, _, _ in self._layout), key=str(row.id))
        if current is not None and any(r.id == current for r in rows):
            self.move_cursor(row=self.get_row_index(str(current)), scroll=True)

    def on_resize(self) -> None:
        layout = WIDE if self.size.width >= WIDE_FROM else NARROW
        if layout != self._layout and self._now is not None:
            self.show(self._rows, self._now)

    @property
    def current_run_id(self) -> int | None:
        if not self._rows or self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001  an empty or just-cleared table
            return None
        return int(key.value) if key.value is not None else None

    @property
    def current_row(self) -> RunRow | None:
        run_id = self.current_run_id
        return next((r for r in self._rows if r.id == run_id), None)

    def _cells(self, row: RunRow) -> dict[str, Text]:
        widths = {key: width for key, _, width in self._layout}
        style = STATUS_STYLES.get(row.status.value, "")
        mark = MARK if row.id in self.marked else " "
        stage = row.stage or "-"
        if row.stage_count > 1 and widths.get("stage", 0) >= 12:
            stage = f"{stage} {row.stage_position}/{row.stage_count}"
        progress = progress_cell(row.progress, min(widths["progress"] - 10, 16) if widths["progress"] > 10
                                 else widths["progress"], style=style)
        if widths["progress"] > 10 and row.total:
            progress.append(f" {row.step}/{row.total}", style="dim")
        trend_width = widths["trend"]
        spark_width = max(3, trend_width - 7)
        trend = Text(sparkline(row.spark, spark_width), style=style or "cyan")
        trend.append(" " + fmt_value(row.last_value).rjust(6) if row.last_value is not None else "")
        cells = {
            "id": Text(f"{mark}{row.id:>{widths['id'] - 1}}", style="bold" if mark != " " else ""),
            "name": Text(_fit(printable(row.name), widths["name"])),
            "status": Text(status_label(row.status.value), style=style),
            "stage": Text(_fit(printable(stage), widths["stage"])),
            "progress": progress,
            "eta": Text(duration(row.eta_seconds) if row.eta_seconds is not None else "-"),
            "trend": trend,
        }
        if "metric" in widths:
            cells["metric"] = Text(_fit(printable(row.metric_key or "-"), widths["metric"]), style="dim")
        if "created" in widths:
            cells["created"] = Text(ago(row.created_at, self._now) if self._now else "-", style="dim")
        return cells

    # --- marks ----------------------------------------------------------------

    def action_toggle_mark(self) -> None:
        row = self.current_row
        if row is None:
            return
        self.marked ^= {row.id}
        self._update_mark(row)
        self.post_message(self.MarksChanged(frozenset(self.marked)))
        self.action_cursor_down()

    def clear_marks(self) -> None:
        self.marked.clear()
        for row in self._rows:
            self._update_mark(row)
        self.post_message(self.MarksChanged(frozenset()))

    def _update_mark(self, row: RunRow) -> None:
        cell = self._cells(row)["id"]
        self.update_cell(str(row.id), "id", cell)
        self._shown.setdefault(row.id, {})["id"] = cell
