"""`ConfigDiff`: the config keys whose values differ between runs, one column per run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from console.view_models import MISSING, config_text

from ..literal import printable
from .cells import fit_widths
from .keys import CURSOR_KEYS


def _fit(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class ConfigDiff(DataTable[Text]):
    DEFAULT_CSS = """
    ConfigDiff {
        height: 1fr;
    }
    """

    BINDINGS = CURSOR_KEYS

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self._shown: object = None

    def show(self, run_labels: Sequence[str], rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        key = (tuple(run_labels), tuple((k, tuple(map(repr, v))) for k, v in rows))
        if key == self._shown:
            return
        self._shown = key
        labels = ["KEY", *(printable(label) for label in run_labels)]
        if rows:
            cells = [
                [Text(printable(name), style="cyan"),
                 *(Text(_fit(printable(config_text(v))), style="dim" if v is MISSING else "") for v in values)]
                for name, values in rows
            ]
            keys: list[str | None] = [name for name, _ in rows]
        else:
            cells = [[Text("no differences: every config key has the same value", style="dim"),
                      *(Text("") for _ in run_labels)]]
            keys = [None]
        self.clear(columns=True)
        for i, (label, width) in enumerate(zip(labels, fit_widths(labels, cells, cap=60))):
            self.add_column(Text(label, style="bold"), key="key" if i == 0 else f"run{i - 1}", width=width)
        for row_key, row in zip(keys, cells):
            self.add_row(*row, key=row_key)
