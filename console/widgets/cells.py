"""Small text renderers for table cells: sparklines and progress bars.

Plain characters, so they read at 16 colours and without colour (NO_COLOR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

SPARK_CHARS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last `width` values as block heights, right-aligned."""
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return " " * width
    low, high = min(values), max(values)
    span = high - low
    top = len(SPARK_CHARS) - 1
    chars = [
        SPARK_CHARS[top // 2 if span == 0 else round((v - low) / span * top)] for v in values
    ]
    return "".join(chars).rjust(width)


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar in eighths of a cell: bar(0.5, 4) == '██  '."""
    if fraction is None or width <= 0:
        return " " * max(0, width)
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return text.ljust(width)


def progress_cell(fraction: float | None, width: int, *, style: str = "") -> Text:
    """'█████▌    62%' or '-' when the total is not known."""
    if fraction is None:
        return Text("-", style="dim")
    bar_width = max(1, width - 5)
    text = Text(bar(fraction, bar_width), style=style or "cyan")
    text.append(f"{fraction * 100:4.0f}%")
    return text


def fit_widths(labels: Sequence[str], rows: Sequence[Sequence[Text]], *, cap: int = 48) -> list[int]:
    """Column widths that fit the labels and every cell, at most `cap`.

    Tables here give DataTable explicit widths: its own measuring happens
    when its message queue goes idle, after a first paint with the labels'
    widths, so what a screen shows first would depend on timing."""
    widths = [len(label) for label in labels]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], min(cap, cell.cell_len))
    return widths
