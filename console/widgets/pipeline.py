"""`PipelineView`: a run's stages in order, each with its status and progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text

from console.view_models import STATUS_STYLES, STATUS_SYMBOLS

from ..literal import printable
from .text_panel import TextPanel

if TYPE_CHECKING:
    from store import StageRead


def render_pipeline(stages: Sequence[StageRead]) -> Text:
    text = Text()
    for i, stage in enumerate(stages):
        if i:
            text.append(" → ", style="dim")
        status = stage.status.value
        style = STATUS_STYLES.get(status, "")
        text.append(f"{STATUS_SYMBOLS.get(status, '?')} ", style=style)
        text.append(printable(stage.name), style=f"bold {style}" if status == "running" else style)
        if stage.kind != stage.name:
            text.append(f" ({stage.kind})", style="dim")
        if stage.total:
            percent = min(100, 100 * stage.step // stage.total)
            text.append(f" {stage.step}/{stage.total} {percent}%", style=style if status == "running" else "dim")
        elif stage.step:
            text.append(f" step {stage.step}", style="dim")
        if status != "running" and status != "succeeded" and status != "pending":
            text.append(f" ({status})", style=style)
    if not stages:
        text.append("no stages", style="dim")
    return text


class PipelineView(TextPanel):
    DEFAULT_CSS = """
    PipelineView {
        height: auto;
        padding: 0 1;
    }
    """

    def show(self, stages: Sequence[StageRead]) -> None:
        self.set_text(render_pipeline(stages))
