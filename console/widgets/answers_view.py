"""`AnswersView`: the playground's answers, one column per checkpoint.

Side by side (A left, B right) on a wide terminal; stacked (A above B) when
it is narrower than `SIDE_BY_SIDE_COLUMNS`, where two columns of 40
characters would wrap every other word. With one checkpoint, one column.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static

from .answer_column import AnswerColumn, AnswerLike

#: narrower than this, the columns are stacked
SIDE_BY_SIDE_COLUMNS = 100

EMPTY = (
    "No answers yet. Write a prompt, choose checkpoint A (and B to compare), then press ctrl+s.\n"
    "Generation runs as a run of its own (a detached process), never in the console."
)


class AnswersView(Container):
    DEFAULT_CSS = """
    AnswersView {
        height: 1fr;
        layout: horizontal;
    }
    AnswersView.-stacked {
        layout: vertical;
    }
    AnswersView > #answers-empty {
        padding: 1 1;
        color: $text-muted;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text(EMPTY), id="answers-empty", markup=False)
        yield AnswerColumn(id="answers-a")
        yield AnswerColumn(id="answers-b")

    def on_mount(self) -> None:
        self.show(())

    @property
    def columns(self) -> list[AnswerColumn]:
        """The columns showing answers, left (or top) first."""
        return [column for column in self.query(AnswerColumn) if column.display]

    @property
    def stacked(self) -> bool:
        return self.has_class("-stacked")

    def fit(self, terminal_columns: int) -> None:
        """Side by side, or stacked on a terminal narrower than SIDE_BY_SIDE_COLUMNS."""
        self.set_class(terminal_columns < SIDE_BY_SIDE_COLUMNS, "-stacked")

    def show(self, columns: Sequence[tuple[str, Sequence[AnswerLike]]]) -> None:
        """(title, responses) per checkpoint, at most two; none shows the hint."""
        self.query_one("#answers-empty").display = not columns
        for index, column in enumerate(self.query(AnswerColumn)):
            column.display = index < len(columns)
            if index < len(columns):
                title, answers = columns[index]
                column.show(title, answers)
