"""`PromptPanel`: the prompt of the item being judged, on top, literally.

At most a third of the screen: a long prompt scrolls (focus it with tab)
rather than pushing the responses, which are what is being judged, out of
view. The item's place in the batch is the border title.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ..literal import printable
from .response_panel import VERTICAL_SCROLL_KEYS


class PromptPanel(VerticalScroll, can_focus=True, inherit_bindings=False):
    DEFAULT_CSS = """
    PromptPanel {
        height: auto;
        max-height: 33%;
        padding: 0 1;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
    }
    PromptPanel:focus {
        border: round $accent;
    }
    """

    BINDINGS = VERTICAL_SCROLL_KEYS

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._body = Static(Text(), markup=False)
        self.text = ""  # the prompt as shown (printable)

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, title: str, prompt: str) -> None:
        self.text = printable(prompt)
        self.border_title = Content(title)
        self._body.update(Text(self.text))
        self.scroll_home(animate=False)
