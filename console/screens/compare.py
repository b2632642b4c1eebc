"""The compare screen: one metric overlaid across the marked runs, and the
config keys whose values differ between them."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Header, Static

from console.view_models import CompareModel, chart_capacity

from ..literal import printable
from ..widgets.chart import PALETTE, ChartLine, LineChart
from ..widgets.config_diff import ConfigDiff
from ..widgets.key_bar import KeyBar
from ..widgets.metric_picker import MetricPicker
from .live import LiveScreen

_SEP = "\x1f"  # joins (stage, key) into an option id


class CompareScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the runs list"),
        Binding("l", "log_scale", "Log scale", tooltip="chart: log scale on/off"),
        Binding("s", "smoothing", "Smooth", tooltip="chart: smoothing (EMA) off, 0.6, 0.9, 0.99"),
        Binding("w", "wall_time", "Step/time", tooltip="chart: x axis by step or by time since each run's start"),
    ]

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__(id="compare")
        self.run_ids = run_ids
        self.model: CompareModel | None = None
        self.metric: tuple[str, str] | None = None
        self._lock = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static(id="compare-title")
        with Vertical(id="compare-body"):
            with Horizontal(id="compare-chart"):
                yield MetricPicker(id="compare-picker")
                yield LineChart(id="compare-lines", empty="none of these runs logged this metric yet",
                                time_per_line=True)
            yield ConfigDiff(id="config-diff")
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = "compare " + ", ".join(f"#{r}" for r in self.run_ids)
        self.model = CompareModel(self.rlhf.engine, self.run_ids)
        self.query_one("#config-diff").border_title = "config: only the keys that differ"
        self.query_one("#compare-picker").focus()
        super().on_mount()

    async def refresh_data(self) -> None:
        assert self.model is not None
        chart = self.query_one(LineChart)
        self.model.capacity = chart_capacity(chart.plot_width)
        async with self._lock:
            await self.model.refresh(self.metric)
            if self.metric is None and (default := self.model.default_metric()) is not None:
                self.metric = default
                await self.model.refresh(self.metric)
        self._show()

    def is_quiet(self) -> bool:
        return self.model is not None and bool(self.model.details) and not any(
            d.run.status.is_active for d in self.model.details.values())

    def _labels(self) -> list[str]:
        assert self.model is not None
        return [f"#{r} {self.model.details[r].run.name}" for r in self.run_ids if r in self.model.details]

    def _show(self) -> None:
        assert self.model is not None
        title = Text("comparing ", style="dim")
        for i, label in enumerate(self._labels()):
            if i:
                title.append("  ")
            title.append("━━ ", style=f"bold {PALETTE[i % len(PALETTE)]}")
            title.append(printable(label))
        self.query_one("#compare-title", Static).update(title)
        metrics = self.model.metrics()
        picker = self.query_one(MetricPicker)
        selected = _SEP.join(self.metric) if self.metric else None
        chosen = picker.set_choices([(_SEP.join(m), f"{m[1]} ({m[0]})") for m in metrics], selected)
        if chosen is not None:
            self.metric = tuple(chosen.split(_SEP, 1))  # type: ignore[assignment]
        self._draw_chart()
        self.query_one(ConfigDiff).show(self._labels(), self.model.diff())

    def _draw_chart(self) -> None:
        assert self.model is not None
        lines = []
        for i, run_id in enumerate(self.run_ids):
            if run_id not in self.model.details or self.metric is None:
                continue
            series = self.model.series.get((run_id, *self.metric))
            points = series.points if series else []
            lines.append(ChartLine(
                label=f"#{run_id}", steps=[p.step for p in points], values=[p.value for p in points],
                wall_times=[p.wall_time for p in points], style=PALETTE[i % len(PALETTE)],
                last=series.last if series else None,
            ))
        self.query_one(LineChart).set_lines(lines)

    def on_option_list_option_highlighted(self, event: MetricPicker.OptionHighlighted) -> None:
        if event.option.id is None:
            return
        metric = tuple(event.option.id.split(_SEP, 1))
        if metric != self.metric:
            self.metric = metric  # type: ignore[assignment]
            self._draw_chart()
            self.request_refresh()  # reads the runs' series of this metric

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_log_scale(self) -> None:
        chart = self.query_one(LineChart)
        chart.log_scale = not chart.log_scale

    def action_smoothing(self) -> None:
        self.query_one(LineChart).cycle_smoothing()

    def action_wall_time(self) -> None:
        chart = self.query_one(LineChart)
        chart.wall_time = not chart.wall_time
