"""`AnswerColumn`: one checkpoint's responses to the playground's prompt,
scrollable, exactly as the model wrote them.

The checkpoint's name is the column's border title, so it stays in view
while the responses scroll. Each response is headed by its number, its
length in tokens and how it ended (by itself, or cut at max new tokens).
Responses, and the checkpoint's name, go through `printable` into `Text` or
`Content`: markup and escape sequences in them are shown, never obeyed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ..literal import printable
from .keys import SCROLL_KEYS


class AnswerLike(Protocol):
    """What a column shows of a response (engine.runtime.jobs.Answer has it).
    Read-only properties, so that frozen dataclasses match."""

    @property
    def response(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def finished(self) -> bool: ...


def render_answers(answers: Sequence[AnswerLike]) -> Text:
    """The responses, one after the other, each under a line saying how long
    it is and whether the model ended it or max new tokens cut it."""
    if not answers:
        return Text("no responses", style="dim")
    text = Text()
    for number, answer in enumerate(answers, 1):
        if number > 1:
            text.append("\n\n")
        text.append(f"#{number}", style="bold")
        text.append(f" · {answer.tokens} token{'s' if answer.tokens != 1 else ''} · ", style="dim")
        if answer.finished:
            text.append("ended by itself", style="green")
        else:
            text.append("cut at max new tokens", style="yellow")
        text.append("\n")
        # An empty response is a real answer (the model ended at once): say so rather than show nothing.
        text.append(printable(answer.response) if answer.response else "(empty)",
                    style="" if answer.response else "dim italic")
    return text


class AnswerColumn(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    AnswerColumn {
        height: 1fr;
        width: 1fr;
        padding: 0 1;
        border-top: solid $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
    }
    AnswerColumn:focus {
        border-top: solid $accent;
    }
    """

    BINDINGS = SCROLL_KEYS

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._body = Static(Text(), markup=False)
        self.title_text = ""
        self.answers: tuple[AnswerLike, ...] = ()

    def compose(self) -> ComposeResult:
        yield self._body

    def show(self, title: str, answers: Sequence[AnswerLike]) -> None:
        self.title_text = printable(title)
        self.answers = tuple(answers)
        # Content(...) is literal; a str border title would be read as markup.
        self.border_title = Content(self.title_text)
        self._body.update(render_answers(self.answers))
        self.scroll_home(animate=False)
