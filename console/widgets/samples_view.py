"""`SamplesView`: what a model wrote, prompt by prompt, exactly as written.

Shows the samples of one step of a training stage (SFT answers its eval
prompts as it trains) or of one batch (the sample stage's K responses per
prompt), each with the checkpoint that wrote it and its notes (length,
whether it ended, a score). Prompts and responses go through `printable`
into `Text`: markup and escape sequences in model output are shown, never
obeyed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..literal import printable
from .keys import SCROLL_KEYS

EMPTY = (
    "No samples yet.\n\n"
    "Stages that generate text (SFT answering its eval prompts as it trains, the sample stage) "
    "list what the model wrote here, by step or batch, exactly as written."
)


def _meta(meta: dict[str, Any]) -> str:
    shown = []
    for key, value in meta.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        shown.append(f"{key}={value}")
    return "  ".join(shown)


def render_samples(samples: Sequence[Any], *, title: str = "") -> Text:
    """Samples (store.SampleView or alike: prompt, response, step, checkpoint, meta)."""
    if not samples:
        return Text(EMPTY, style="dim")
    text = Text()
    if title:
        text.append(printable(title), style="bold")
        text.append(f"  {len(samples)} sample{'s' if len(samples) != 1 else ''}\n\n", style="dim")
    for number, sample in enumerate(samples, 1):
        where = [f"#{number}"]
        if sample.step is not None:
            where.append(f"step {sample.step}")
        if sample.checkpoint:
            where.append(sample.checkpoint.rstrip("/").rsplit("/", 1)[-1])
        text.append(printable(" · ".join(where)), style="bold")
        # A rejection stage's answer says why it was chosen: on its own line, not among the notes.
        notes = {key: value for key, value in sample.meta.items() if key != "why"}
        if notes:
            text.append("  " + printable(_meta(notes)), style="dim")
        text.append("\n")
        if "why" in sample.meta:
            text.append("chosen: " + printable(str(sample.meta["why"])) + "\n", style="green")
        text.append(printable(sample.prompt), style="cyan")
        text.append("\n")
        text.append(printable(sample.response))
        text.append("\n\n")
    return text


class SamplesView(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    SamplesView {
        height: 1fr;
        padding: 0 1;
    }
    """

    BINDINGS = SCROLL_KEYS

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._body = Static(render_samples(()), markup=False)

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, samples: Sequence[Any], *, title: str = "") -> None:
        self._body.update(render_samples(samples, title=title))
        self.scroll_home(animate=False)
