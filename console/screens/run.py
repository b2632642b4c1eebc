"""The run screen: one run, live. Its stages as a pipeline, then tabs:
charts, metrics (latest/min/max), the log (following), the resolved config,
checkpoints, and samples.

The run keeps going whatever happens here: `esc` goes back, `q` quits the
console, and opening it again later picks the charts up where they were,
because everything shown is read from the store.
"""

from __future__ import annotations

import asyncio

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Header, TabbedContent, TabPane

from console.view_models import (
    ChartGroup,
    RunChanges,
    RunModel,
    SampleGroup,
    chart_capacity,
    current_stage,
    load_samples,
    main_key,
    stage_eta,
)

from ..literal import printable
from ..widgets.chart import ChartLine, LineChart
from ..widgets.checkpoints_table import CheckpointsTable
from ..widgets.config_view import ConfigView
from ..widgets.key_bar import KeyBar
from ..widgets.log_view import LogView
from ..widgets.metric_picker import MetricPicker
from ..widgets.metrics_table import MetricsTable
from ..widgets.pipeline import PipelineView
from ..widgets.run_header import RunHeader
from ..widgets.samples_view import SamplesView
from .live import LiveScreen

TABS = ("charts", "metrics", "log", "config", "checkpoints", "samples")
#: what has the focus when a tab is shown, so j/k work at once
_FOCUS = {"charts": "#picker", "metrics": "#metrics-table", "log": "#log-view", "config": "#config-view",
          "checkpoints": "#checkpoints-table", "samples": "#sample-picker"}


class RunScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the runs list (the run keeps going)"),
        Binding("x", "cancel_run", "Cancel run", tooltip="cancel this run (asks first; it saves a checkpoint)"),
        Binding("r", "resume_run", "Resume", tooltip="resume this run from its last checkpoint"),
        Binding("l", "log_scale", "Log scale", tooltip="chart: log scale on/off"),
        Binding("s", "smoothing", "Smooth", tooltip="chart: smoothing (EMA) off, 0.6, 0.9, 0.99"),
        Binding("w", "wall_time", "Step/time", tooltip="chart: x axis by step or by wall time"),
        Binding("R", "report", "Report", tooltip="the run's report: key numbers per stage, win rates, arena"),
        Binding("p", "playground", "Playground", show=False,
                tooltip="playground with this run's checkpoint (on the checkpoints tab: the one selected)"),
        Binding("right_square_bracket", "next_tab", "Next tab", show=False),
        Binding("left_square_bracket", "previous_tab", "Previous tab", show=False),
        *(Binding(str(i + 1), f"show_tab('{tab}')", f"{tab.capitalize()} tab", show=False)
          for i, tab in enumerate(TABS)),
    ]

    def __init__(self, run_id: int, *, tab: str = "charts") -> None:
        super().__init__(id=f"run-{run_id}")
        self.run_id = run_id
        self.initial_tab = tab
        self.model: RunModel | None = None
        self.group_id: str | None = None
        self.sample_group_id: str | None = None
        self._lock = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield RunHeader(id="run-header")
        yield PipelineView(id="pipeline")
        with TabbedContent(initial=self.initial_tab, id="tabs"):
            with TabPane("Charts", id="charts"), Horizontal(id="chart-pane"):
                yield MetricPicker(id="picker")
                yield LineChart(id="chart")
            with TabPane("Metrics", id="metrics"):
                yield MetricsTable(id="metrics-table")
            with TabPane("Log", id="log"):
                yield LogView(id="log-view")
            with TabPane("Config", id="config"):
                yield ConfigView(id="config-view")
            with TabPane("Checkpoints", id="checkpoints"):
                yield CheckpointsTable(root=self.rlhf.engine.workspace.root, id="checkpoints-table")
            with TabPane("Samples", id="samples"), Horizontal(id="samples-pane"):
                yield MetricPicker(id="sample-picker")
                yield SamplesView(id="samples-view")
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = f"run {self.run_id}"
        self.model = RunModel(self.rlhf.engine, self.run_id)
        self.query_one(_FOCUS[self.initial_tab]).focus()
        super().on_mount()

    # --- data -------------------------------------------------------------------------

    async def refresh_data(self) -> None:
        assert self.model is not None
        chart = self.query_one(LineChart)
        if self.model.detail is None:
            self.model.capacity = chart_capacity(chart.plot_width)
        async with self._lock:
            changes = await self.model.refresh()
        self._apply(changes)

    def is_quiet(self) -> bool:
        return self.model is not None and self.model.detail is not None and not self.model.run.status.is_active

    def _apply(self, changes: RunChanges) -> None:
        assert self.model is not None
        detail = changes.detail
        now = self.rlhf.clock()
        self.sub_title = f"run {detail.run.id} · {printable(detail.run.name)}"
        self.query_one(RunHeader).show(detail, now, self._eta())
        self.query_one(PipelineView).show(detail.stages)
        self.query_one(CheckpointsTable).show(detail, now)
        self.query_one(ConfigView).show(detail.run)
        self.query_one(LogView).append(changes.logs)
        if changes.keys_added or changes.metrics_changed or changes.reloaded or self.refreshes == 0:
            series = sorted(self.model.series.values(), key=lambda s: (s.stage_id, s.key))
            self.query_one(MetricsTable).show(series)
        groups = self.model.groups()
        if self.group_id is None:
            # Start on the stage running now (else the last one reached), its loss first.
            stage = current_stage(detail.stages)
            self.group_id = next((g.id for g in groups if stage and g.keys[0][0] == stage.id), None)
        picker = self.query_one("#picker", MetricPicker)
        self.group_id = picker.set_choices([(g.id, g.label) for g in groups], self.group_id)
        group = self._group()
        if group is None or changes.keys_added or changes.reloaded or self.refreshes == 0 or (
            set(group.keys) & changes.metrics_changed
        ):
            self._draw_chart()
        if changes.samples_changed or self.refreshes == 0:
            sample_picker = self.query_one("#sample-picker", MetricPicker)
            newest = self.sample_group_id is None or (
                bool(self.model.sample_groups) and sample_picker.highlighted == 0)
            choices = [(g.id, g.label) for g in self.model.sample_groups]
            # Following the newest step while it is highlighted, as the log follows its newest line.
            self.sample_group_id = sample_picker.set_choices(
                choices, choices[0][0] if newest and choices else self.sample_group_id)
            self._show_samples()

    def _eta(self) -> float | None:
        assert self.model is not None and self.model.detail is not None
        stage = current_stage(self.model.detail.stages)
        if stage is None:
            return None
        keys = [key for (stage_id, key) in self.model.series if stage_id == stage.id]
        key = main_key(sorted(keys))
        points = self.model.series[(stage.id, key)].points if key else []
        return stage_eta(stage, points, self.rlhf.clock())

    def _group(self) -> ChartGroup | None:
        if self.model is None:
            return None
        return next((g for g in self.model.groups() if g.id == self.group_id), None)

    def _draw_chart(self) -> None:
        chart = self.query_one(LineChart)
        group = self._group()
        if group is None or self.model is None:
            chart.set_lines([], empty="no metrics logged yet")
            return
        chart.set_lines([
            ChartLine(label=s.key, steps=[p.step for p in s.points], values=[p.value for p in s.points],
                      wall_times=[p.wall_time for p in s.points], last=s.last)
            for s in self.model.group_series(group)
        ])
        wanted = chart_capacity(chart.plot_width)
        if any(s.capacity < wanted for s in self.model.group_series(group)):
            self.run_worker(self._reload(group, wanted), group="reload", exit_on_error=False)

    async def _reload(self, group: ChartGroup, capacity: int) -> None:
        """The chart grew: read its series again at the new resolution."""
        assert self.model is not None
        async with self._lock:
            await asyncio.to_thread(self.model.reload_sync, group.keys, capacity)
        self._draw_chart()

    def _sample_group(self) -> SampleGroup | None:
        if self.model is None:
            return None
        return next((g for g in self.model.sample_groups if g.id == self.sample_group_id), None)

    def _show_samples(self) -> None:
        group = self._sample_group()
        if group is None:
            self.query_one(SamplesView).show(())
        else:
            self.run_worker(self._load_samples(group), group="samples", exclusive=True, exit_on_error=False)

    async def _load_samples(self, group: SampleGroup) -> None:
        assert self.model is not None
        async with self._lock:
            samples = await asyncio.to_thread(load_samples, self.model.engine.reads, group)
        if group.id == self.sample_group_id:
            self.query_one(SamplesView).show(samples, title=group.label)

    def on_option_list_option_highlighted(self, event: MetricPicker.OptionHighlighted) -> None:
        if event.option_list.id == "picker" and event.option.id != self.group_id:
            self.group_id = event.option.id
            self._draw_chart()
        elif event.option_list.id == "sample-picker" and event.option.id != self.sample_group_id:
            self.sample_group_id = event.option.id
            self._show_samples()

    def on_resize(self) -> None:
        if self.model is not None and self.model.detail is not None:
            self.call_after_refresh(self._draw_chart)

    # --- keys -------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_cancel_run(self) -> None:
        name = self.model.run.name if self.model and self.model.detail else str(self.run_id)
        self.rlhf.cancel_run(self.run_id, name)

    def action_resume_run(self) -> None:
        self.rlhf.resume_run(self.run_id)

    def action_playground(self) -> None:
        self.rlhf.open_playground(checkpoint=self._playground_checkpoint())

    def action_report(self) -> None:
        from .report import ReportScreen

        self.app.push_screen(ReportScreen(self.run_id))

    def _playground_checkpoint(self) -> str | None:
        """The checkpoint under the cursor on the checkpoints tab, else the
        run's newest final model, else its newest checkpoint."""
        if self.model is None or self.model.detail is None or not self.model.detail.checkpoints:
            return None
        checkpoints = self.model.detail.checkpoints
        if self.active_tab == "checkpoints":
            table = self.query_one(CheckpointsTable)
            if table.row_count:
                key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
                chosen = next((c for c in checkpoints if str(c.id) == key), None)
                if chosen is not None:
                    return chosen.path
        finals = [c for c in checkpoints if c.is_final]
        return max(finals or checkpoints, key=lambda c: c.id).path  # the newest written

    def action_log_scale(self) -> None:
        chart = self.query_one(LineChart)
        chart.log_scale = not chart.log_scale
        self._show_tab("charts")

    def action_smoothing(self) -> None:
        self.query_one(LineChart).cycle_smoothing()
        self._show_tab("charts")

    def action_wall_time(self) -> None:
        chart = self.query_one(LineChart)
        chart.wall_time = not chart.wall_time
        self._show_tab("charts")

    def action_show_tab(self, tab: str) -> None:
        self._show_tab(tab)

    def action_next_tab(self) -> None:
        self._step_tab(1)

    def action_previous_tab(self) -> None:
        self._step_tab(-1)

    def _step_tab(self, delta: int) -> None:
        tabs = self.query_one(TabbedContent)
        index = TABS.index(tabs.active) if tabs.active in TABS else 0
        self._show_tab(TABS[(index + delta) % len(TABS)])

    def _show_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active != tab:
            tabs.active = tab
            self.call_after_refresh(lambda: self.query_one(_FOCUS[tab]).focus())

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active
