"""`ResponsePanel`: one response of a rank item, scrollable, exactly as the model wrote it.

The panel's label (A/B for a pair, 1..K for a ranking) is its border title, so
it stays in view while a long response scrolls; the border subtitle says how
long the response is and whether max new tokens cut it. What the annotator
decided about it (chosen, its place in their order) is appended to the title.

It keeps only the keys that scroll it vertically: left/right, which a
`VerticalScroll` would otherwise claim, choose A or B on the rank screen.
Text goes through `printable` into `Text`/`Content`: markup and escape
sequences in a response are shown, never obeyed.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ..literal import printable
from .keys import SCROLL_KEYS

#: a VerticalScroll's keys without left/right (and j/k/g/G), for panels on the rank screen
VERTICAL_SCROLL_KEYS: list[BindingType] = [
    Binding("up", "scroll_up", show=False),
    Binding("down", "scroll_down", show=False),
    Binding("pageup", "page_up", show=False),
    Binding("pagedown", "page_down", show=False),
    Binding("home", "scroll_home", show=False),
    Binding("end", "scroll_end", show=False),
    *SCROLL_KEYS,
]


def length_note(text: str, meta: dict[str, Any]) -> str:
    """'42 tokens' (or characters when the sampler recorded no count), and
    'cut at max new tokens' when the model did not end it by itself."""
    tokens = meta.get("tokens")
    size = f"{tokens} tokens" if isinstance(tokens, int) else f"{len(text)} characters"
    return f"{size} · cut at max new tokens" if meta.get("finished") is False else size


class ResponsePanel(VerticalScroll, can_focus=True, inherit_bindings=False):
    DEFAULT_CSS = """
    ResponsePanel {
        height: 1fr;
        width: 1fr;
        padding: 0 1;
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
    }
    ResponsePanel:focus {
        border: round $accent;
    }
    ResponsePanel.-chosen {
        border: round $success;
    }
    ResponsePanel.-chosen:focus {
        border: double $success;
    }
    """

    BINDINGS = VERTICAL_SCROLL_KEYS

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._body = Static(Text(), markup=False)
        self.label = ""
        self.text = ""  # the response as shown (printable), for tests and the bench

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, label: str, text: str, meta: dict[str, Any], *, note: str = "", chosen: bool = False) -> None:
        """A new response: scrolled to its top, titled `label` (plus `note`)."""
        self.label = label
        self.text = printable(text)
        self.border_subtitle = Content(length_note(text, meta))
        # An empty response is a real answer (the model ended at once): say so rather than show nothing.
        self._body.update(Text(self.text) if text else Text("(empty)", style="dim italic"))
        self.mark(note, chosen=chosen)
        self.scroll_home(animate=False)

    def mark(self, note: str, *, chosen: bool = False) -> None:
        """Change only what follows the label: a place in the order being built, a choice."""
        # Content is literal; a str title would be read as markup (notes can hold checkpoint paths).
        self.border_title = Content(f"{self.label} · {printable(note)}" if note else self.label)
        self.set_class(chosen, "-chosen")
