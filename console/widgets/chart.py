"""`LineChart`: metric series drawn with braille dots (2 x 4 per cell).

Our own small chart: no plotting dependency, and it draws what the store
already downsampled (`metric_series(max_points=width * 2)`), so its cost
depends on its size, never on how many points a run logged.

Toggles: log scale, EMA smoothing (TensorBoard's, debiased; the raw line
stays faintly behind) and a step or wall-time x-axis. Lines differ by
colour and, without colour (NO_COLOR), every other line is dashed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from console.view_models import duration, fmt_value

from ..literal import printable

#: line colours: ANSI names, so 16-colour terminals get distinct ones too
PALETTE = ("cyan", "yellow", "magenta", "green", "blue", "red")
SMOOTHING_STEPS = (0.0, 0.6, 0.9, 0.99)

# Braille dot bits by (column, row) inside a cell.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


@dataclass(frozen=True)
class ChartLine:
    label: str
    steps: Sequence[float]
    values: Sequence[float]
    wall_times: Sequence[float]
    style: str = ""  # a colour; default: from the palette by position
    last: float | None = None  # the exact newest value (points may be bucket means)


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    if weight <= 0:
        return list(values)
    smoothed, last, n = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            smoothed.append(value)
            continue
        n += 1
        last = last * weight + (1 - weight) * value
        smoothed.append(last / (1 - weight**n))
    return smoothed


def compact_number(x: float) -> str:
    """An axis label: 950, 12.5k, 1.2M."""
    magnitude = abs(x)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= 10 * size or (magnitude >= size and suffix != "k"):
            return f"{x / size:.3g}{suffix}"
    return f"{x:.0f}" if magnitude >= 10 or x == int(x) else f"{x:.3g}"


class LineChart(Widget):
    DEFAULT_CSS = """
    LineChart {
        width: 1fr;
        height: 1fr;
        min-height: 6;
        padding: 0 1 0 0;
        text-wrap: nowrap;
        text-overflow: clip;
    }
    """

    log_scale: reactive[bool] = reactive(False)
    smoothing: reactive[float] = reactive(0.0)
    wall_time: reactive[bool] = reactive(False)

    def __init__(self, *, empty: str = "no metrics logged yet", time_per_line: bool = False,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.empty = empty
        #: wall time from each line's own start (runs compared), else from the earliest point
        self.time_per_line = time_per_line
        self.lines: list[ChartLine] = []
        self._cache: tuple[object, Text] | None = None

    # --- what to draw ---------------------------------------------------------

    def set_lines(self, lines: Sequence[ChartLine], *, empty: str | None = None) -> None:
        self.lines = list(lines)
        if empty is not None:
            self.empty = empty
        self._cache = None
        self.refresh()

    def cycle_smoothing(self) -> float:
        steps = SMOOTHING_STEPS
        self.smoothing = steps[(steps.index(self.smoothing) + 1) % len(steps)] if self.smoothing in steps else 0.0
        return self.smoothing

    def watch_log_scale(self) -> None:
        self._cache = None

    def watch_smoothing(self) -> None:
        self._cache = None

    def watch_wall_time(self) -> None:
        self._cache = None

    @property
    def plot_width(self) -> int:
        """Columns of the plot area (about the width less the y labels)."""
        return max(10, self.content_size.width - 10)

    @property
    def settings(self) -> str:
        parts = ["log" if self.log_scale else "linear", f"EMA {self.smoothing:g}" if self.smoothing else "raw",
                 "x: time" if self.wall_time else "x: step"]
        return " · ".join(parts)

    # --- drawing ---------------------------------------------------------------

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        key = (width, height, self.log_scale, self.smoothing, self.wall_time, self.app.no_color)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        text = self._draw(width, height)
        self._cache = (key, text)
        return text

    def _series(self) -> list[tuple[int, ChartLine, list[tuple[float, float]], list[tuple[float, float]] | None]]:
        """Per line: (index, line, raw xy, smoothed xy or None), in plot units."""
        def usable(xs: Sequence[float], values: Sequence[float]) -> list[tuple[float, float]]:
            points = []
            for x, y in zip(xs, values):
                if not math.isfinite(y) or (self.log_scale and y <= 0):
                    continue
                points.append((x, math.log10(y) if self.log_scale else y))
            return points

        prepared = []
        origin = min((min(line.wall_times) for line in self.lines if line.wall_times), default=0.0)
        for index, line in enumerate(self.lines):
            if self.wall_time and line.wall_times:
                start = min(line.wall_times) if self.time_per_line else origin
                xs = [t - start for t in line.wall_times]
            else:
                xs = list(line.steps)
            raw = list(line.values)
            smooth = ema(raw, self.smoothing) if self.smoothing else None
            prepared.append((index, line, usable(xs, raw), usable(xs, smooth) if smooth is not None else None))
        return prepared

    def _draw(self, width: int, height: int) -> Text:
        series = self._series()
        legend = self._legend(series)
        if not any(raw for _, _, raw, _ in series):
            hidden = " (log scale hides values ≤ 0)" if self.log_scale and self.lines else ""
            return Text.assemble(legend, "\n\n", Text(printable(self.empty) + hidden, style="dim"))
        plot_h = height - 3
        if plot_h < 2 or width < 20:
            return legend

        all_points = [p for _, _, raw, smooth in series for p in (raw + (smooth or []))]
        x_lo, x_hi = min(p[0] for p in all_points), max(p[0] for p in all_points)
        y_lo, y_hi = min(p[1] for p in all_points), max(p[1] for p in all_points)
        if x_hi == x_lo:
            x_lo, x_hi = x_lo - 1, x_hi + 1
        if y_hi == y_lo:
            pad = abs(y_lo) * 0.05 or 1.0
            y_lo, y_hi = y_lo - pad, y_hi + pad

        def y_label(v: float) -> str:
            return fmt_value(10**v if self.log_scale else v)

        labels = {0: y_label(y_hi), plot_h - 1: y_label(y_lo), (plot_h - 1) // 2: y_label((y_hi + y_lo) / 2)}
        label_w = max(len(s) for s in labels.values())
        plot_w = max(4, width - label_w - 2)
        dots_w, dots_h = plot_w * 2, plot_h * 4

        masks = [[0] * plot_w for _ in range(plot_h)]
        styles: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]
        dashed_allowed = self.app.no_color

        def plot(points: list[tuple[float, float]], style: str, dashed: bool) -> None:
            previous = None
            drawn = 0
            for x, y in points:
                dx = round((x - x_lo) / (x_hi - x_lo) * (dots_w - 1))
                dy = round((y_hi - y) / (y_hi - y_lo) * (dots_h - 1))
                for px, py in _segment(previous, (dx, dy)):
                    drawn += 1
                    if dashed and (drawn // 3) % 2:
                        continue
                    cx, cy = px // 2, py // 4
                    masks[cy][cx] |= _DOTS[px % 2][py % 4]
                    styles[cy][cx] = style
                previous = (dx, dy)

        for index, line, raw, smooth in series:
            colour = line.style or PALETTE[index % len(PALETTE)]
            dashed = dashed_allowed and index % 2 == 1
            if smooth is not None:
                plot(raw, f"dim {colour}", dashed)
                plot(smooth, f"bold {colour}", dashed)
            else:
                plot(raw, colour, dashed)

        text = Text.assemble(legend, "\n", no_wrap=True, overflow="crop")
        for row in range(plot_h):
            label = labels.get(row, "")
            text.append(label.rjust(label_w), style="dim")
            text.append("┤" if row in labels else "│", style="dim")
            run_style: str | None = None
            run: list[str] = []
            for col in range(plot_w):
                mask = masks[row][col]
                style = styles[row][col] if mask else None
                if style != run_style and run:
                    text.append("".join(run), style=run_style or "")
                    run = []
                run_style = style
                run.append(chr(0x2800 + mask) if mask else " ")
            if run:
                text.append("".join(run), style=run_style or "")
            text.append("\n")
        settings = f" {self.settings} "
        axis = "─" * plot_w
        if len(settings) + 4 <= plot_w:
            axis = axis[: plot_w - len(settings) - 1] + settings + "─"
        text.append(" " * label_w + "└" + axis + "\n", style="dim")
        text.append(" " * (label_w + 1) + self._x_labels(x_lo, x_hi, plot_w), style="dim")
        return text

    def _x_labels(self, lo: float, hi: float, width: int) -> str:
        fmt = duration if self.wall_time else compact_number
        left, mid, right = fmt(lo), fmt((lo + hi) / 2), fmt(hi)
        line = [" "] * width
        for pos, label in ((0, left), (width // 2 - len(mid) // 2, mid), (width - len(right), right)):
            for i, ch in enumerate(label):
                if 0 <= pos + i < width:
                    line[pos + i] = ch
        return "".join(line)

    def _legend(self, series: Sequence[tuple[int, ChartLine, list, list | None]]) -> Text:
        legend = Text(no_wrap=True, overflow="ellipsis")
        for index, line, _raw, _smooth in series:
            colour = line.style or PALETTE[index % len(PALETTE)]
            marker = "╍╍" if self.app.no_color and index % 2 == 1 else "━━"
            last = line.last if line.last is not None else (line.values[-1] if line.values else None)
            legend.append(marker + " ", style=f"bold {colour}")
            legend.append(printable(line.label))
            legend.append(f" {fmt_value(last)}  ", style="bold")
        return legend


def _segment(start: tuple[int, int] | None, end: tuple[int, int]) -> list[tuple[int, int]]:
    """Dots from start (exclusive) to end (inclusive): Bresenham's line."""
    if start is None:
        return [end]
    x0, y0 = start
    x1, y1 = end
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    dots = []
    while (x0, y0) != (x1, y1):
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy
        dots.append((x0, y0))
    return dots
