"""`RunHeader`: a run's name, status, attempt, times, ETA and error, at the top of its screen."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from console.view_models import STATUS_STYLES, ago, current_stage, duration, first_line, status_label
from engine import RunDetail

from ..literal import printable
from .text_panel import TextPanel


def render_header(detail: RunDetail, now: datetime, eta_seconds: float | None) -> Text:
    run = detail.run
    style = STATUS_STYLES.get(run.status.value, "")
    text = Text(no_wrap=False)
    text.append(f"#{run.id} ", style="bold")
    text.append(printable(run.name), style="bold")
    text.append("  ")
    text.append(status_label(run.status.value), style=style)
    if run.attempt > 1:
        text.append(f"  attempt {run.attempt}", style="dim")
    text.append(f"  created {ago(run.created_at, now)}", style="dim")
    if run.finished_at and run.started_at:
        text.append(f"  took {duration((run.finished_at - run.started_at).total_seconds())}", style="dim")
    stage = current_stage(detail.stages)
    if run.status.is_active and stage is not None:
        text.append(f"  {printable(stage.name)}")
        if stage.device:
            text.append(f" on {printable(stage.device)}", style="dim")
        if eta_seconds is not None:
            text.append(f"  ETA {duration(eta_seconds)}", style="bold")
    if run.error:
        text.append("\n")
        text.append(printable(first_line(run.error)), style="red")
    return text


class RunHeader(TextPanel):
    DEFAULT_CSS = """
    RunHeader {
        height: auto;
        max-height: 3;
        padding: 0 1;
        background: $boost;
    }
    """

    def show(self, detail: RunDetail, now: datetime, eta_seconds: float | None) -> None:
        self.set_text(render_header(detail, now, eta_seconds))
