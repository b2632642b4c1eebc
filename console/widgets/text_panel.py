"""`TextPanel`: a few lines of text that change often (headers, status, gauges).

Unlike `Static.update`, setting the same text again does nothing, and new
text of the same height repaints without a new layout of the whole screen;
that keeps a refresh every second from costing the next key press a layout.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class TextPanel(Widget):
    DEFAULT_CSS = """
    TextPanel {
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = Text()

    def set_text(self, text: Text) -> None:
        if text == self._text:
            return
        # Lines are a lower bound of the height (long lines wrap): relayout only when they change.
        same_height = text.plain.count("\n") == self._text.plain.count("\n") and self.size.width >= max(
            (len(line) for line in text.plain.split("\n")), default=0)
        self._text = text
        self.refresh(layout=not same_height)

    def render(self) -> Text:
        return self._text
