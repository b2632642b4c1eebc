"""`MetricsTable`: each metric's latest value, min and max, and the step it was logged at."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from console.view_models import KeySeries, fmt_value

from ..literal import printable
from .cells import fit_widths
from .keys import CURSOR_KEYS

COLUMNS = (("stage", "STAGE"), ("key", "KEY"), ("latest", "LATEST"), ("min", "MIN"), ("max", "MAX"),
           ("step", "STEP"))


class MetricsTable(DataTable[Text]):
    DEFAULT_CSS = """
    MetricsTable {
        height: 1fr;
    }
    """

    BINDINGS = CURSOR_KEYS

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self._keys: list[str] = []
        self._widths: list[int] = []

    def show(self, series: Sequence[KeySeries]) -> None:
        rows = {f"{s.stage_id}:{s.key}": self._cells(s) for s in series}
        widths = fit_widths([label for _, label in COLUMNS], list(rows.values()))
        if widths != self._widths:
            self._widths = widths
            self.clear(columns=True)
            for (key, label), width in zip(COLUMNS, widths):
                self.add_column(Text(label, style="bold"), key=key, width=width)
            self._keys = []
        if list(rows) != self._keys:
            self.clear()
            for key, cells in rows.items():
                self.add_row(*cells, key=key)
            self._keys = list(rows)
            return
        for key, cells in rows.items():
            for (column, _), value in zip(COLUMNS, cells):
                self.update_cell(key, column, value)

    @staticmethod
    def _cells(s: KeySeries) -> list[Text]:
        return [
            Text(printable(s.stage), style="dim"),
            Text(printable(s.key)),
            Text(fmt_value(s.last), style="bold", justify="right"),
            Text(fmt_value(s.low), justify="right"),
            Text(fmt_value(s.high), justify="right"),
            Text("-" if s.last_step is None else str(s.last_step), justify="right", style="dim"),
        ]
