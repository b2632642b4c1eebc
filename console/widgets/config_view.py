"""`ConfigView`: a run's resolved config, stage by stage, as TOML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.spec.toml_render import toml_value

from ..literal import printable
from .keys import SCROLL_KEYS

if TYPE_CHECKING:
    from store import RunRead


def render_config(run: RunRead) -> Text:
    spec = run.spec or {}
    text = Text()
    text.append(f"# run {run.id} '{printable(run.name)}'", style="dim")
    if run.spec_path:
        text.append(f", from {printable(run.spec_path)}", style="dim")
    text.append("\n# as resolved at submission: defaults and references filled in\n", style="dim")
    if spec.get("description"):
        text.append(f"description = {printable(_toml(spec['description']))}\n")
    for stage, config in (spec.get("stages") or {}).items():
        text.append(f"\n[stages.{printable(stage)}]\n", style="bold")
        for key, value in (config or {}).items():
            text.append(f"{printable(str(key))} = ", style="cyan")
            text.append(printable(_toml(value)))
            text.append("\n")
    if not spec.get("stages"):
        text.append("\nno stages recorded\n", style="dim")
    return text


def _toml(value: object) -> str:
    if value is None:
        return "# unset"
    try:
        return toml_value(value)
    except (TypeError, ValueError):  # not TOML-able (an object, a huge int): shown as Python writes it
        return str(value)


class ConfigView(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    ConfigView {
        height: 1fr;
        padding: 0 1;
    }
    ConfigView > Static {
        width: auto;
    }
    """

    BINDINGS = SCROLL_KEYS

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Static("", markup=False)
        self._shown: int | None = None

    def compose(self) -> ComposeResult:
        yield self._text

    def show(self, run: RunRead) -> None:
        key = hash((run.id, run.attempt, run.spec_text))
        if key != self._shown:
            self._shown = key
            self._text.update(render_config(run))
