"""`CommentScreen`: one line of comment on the item being judged (`c`).

Dismissed with the comment (enter; an empty line clears it) or with None
(esc: nothing changes).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class CommentScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    CommentScreen {
        align: center middle;
    }
    #comment-box {
        width: 80;
        max-width: 95%;
        height: auto;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, existing: str | None = None) -> None:
        super().__init__()
        self.existing = existing or ""

    def compose(self) -> ComposeResult:
        with Vertical(id="comment-box"):
            yield Static(Text("Comment on this item", style="bold"))
            # Not selected on focus: a key typed into an existing comment adds to it, not replaces it.
            yield Input(self.existing, placeholder="why, what was wrong, anything a trainer should know",
                        select_on_focus=False, id="comment-input")
            yield Static(Text("enter keeps it (an empty line removes it) · esc cancels", style="dim"))

    def on_mount(self) -> None:
        field = self.query_one(Input)
        field.focus()
        field.cursor_position = len(field.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
