"""`ResponsesView`: the K responses of a rank item, side by side or stacked.

A pair sits side by side (A left, B right) on a terminal at least
`SIDE_BY_SIDE_COLUMNS` wide and stacked (A above B) on a narrower one,
where two columns of 40 characters would wrap every other word. More than
two responses fill a grid with columns no narrower than `MIN_COLUMN_WIDTH`,
balanced so the last row is not left with one lonely response.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from textual.containers import Container

from .answers_view import SIDE_BY_SIDE_COLUMNS
from .response_panel import ResponsePanel

#: a response column narrower than this wraps too much to read side by side
MIN_COLUMN_WIDTH = 50


@dataclass(frozen=True)
class PanelContent:
    """What one panel shows."""

    label: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    chosen: bool = False


def grid_columns(terminal_columns: int, responses: int) -> int:
    """How many responses sit side by side: one below `SIDE_BY_SIDE_COLUMNS`,
    else as many as fit at `MIN_COLUMN_WIDTH`, spread evenly over the rows."""
    if terminal_columns < SIDE_BY_SIDE_COLUMNS or responses <= 1:
        return 1
    fit = max(2, min(responses, terminal_columns // MIN_COLUMN_WIDTH))
    rows = math.ceil(responses / fit)
    return math.ceil(responses / rows)


class ResponsesView(Container):
    DEFAULT_CSS = """
    ResponsesView {
        height: 1fr;
        layout: grid;
        grid-size: 2 1;
        grid-gutter: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._terminal_columns = SIDE_BY_SIDE_COLUMNS

    @property
    def panels(self) -> list[ResponsePanel]:
        """The panels, A (or 1) first."""
        return list(self.query_children(ResponsePanel))

    @property
    def columns(self) -> int:
        return self.styles.grid_size_columns or 1

    @property
    def stacked(self) -> bool:
        return self.columns == 1 and len(self.panels) > 1

    def fit(self, terminal_columns: int) -> None:
        self._terminal_columns = terminal_columns
        self._layout_grid(len(self.panels))

    def _layout_grid(self, count: int) -> None:
        columns = grid_columns(self._terminal_columns, count)
        rows = max(1, math.ceil(count / columns))
        if (self.styles.grid_size_columns, self.styles.grid_size_rows) != (columns, rows):
            self.styles.grid_size_columns = columns
            self.styles.grid_size_rows = rows

    def show(self, contents: Sequence[PanelContent]) -> None:
        """One panel per response; panels are added or removed only when K changes,
        so the usual next item (same K) costs a repaint, not a rebuild."""
        panels = self.panels
        if len(panels) > len(contents):
            for panel in panels[len(contents):]:
                panel.remove()
            panels = panels[:len(contents)]
        new = [ResponsePanel() for _ in range(len(contents) - len(panels))]
        for panel, content in zip([*panels, *new], contents):
            panel.show(content.label, content.text, content.meta, note=content.note, chosen=content.chosen)
        if new:
            self.mount(*new)
        self._layout_grid(len(contents))
