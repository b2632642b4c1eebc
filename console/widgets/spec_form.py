"""`SpecForm`: a template's main fields as compact inputs, each with its help text."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Select, Static

from ..forms import FormField
from ..literal import printable


class SpecForm(VerticalScroll):
    DEFAULT_CSS = """
    SpecForm {
        height: 1fr;
        padding: 0 1;
    }
    SpecForm .field {
        height: 1;
        margin-top: 1;
    }
    SpecForm .field Label {
        width: 26;
    }
    SpecForm .field Input, SpecForm .field Select {
        width: 1fr;
    }
    SpecForm .help {
        color: $text-muted;
        padding-left: 26;
        height: auto;
    }
    """

    def __init__(self, fields: Sequence[FormField] = (), *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.fields = list(fields)

    def compose(self) -> ComposeResult:
        for index, field in enumerate(self.fields):
            with Horizontal(classes="field"):
                yield Label(Text(printable(field.label)))
                if field.type in ("choice", "bool"):
                    yield Select(
                        [(Text(c), c) for c in field.choices], value=field.value, allow_blank=False,
                        compact=True, id=f"field-{index}",
                    )
                else:
                    yield Input(
                        field.value, placeholder="(unset)" if field.optional else "", compact=True,
                        id=f"field-{index}", select_on_focus=False,
                    )
            help_text = field.help + (" (empty: unset)" if field.optional else "")
            if help_text:
                yield Static(Text(printable(help_text)), classes="help", markup=False)

    async def set_fields(self, fields: Sequence[FormField]) -> None:
        self.fields = list(fields)
        await self.recompose()

    def values(self) -> dict[str, str]:
        values = {}
        for index, field in enumerate(self.fields):
            widget = self.query_one(f"#field-{index}")
            if isinstance(widget, Input):
                values[field.id] = widget.value
            elif isinstance(widget, Select):
                values[field.id] = str(widget.value)
        return values

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter moves to the next field, as in a form on paper."""
        event.stop()
        self.screen.focus_next()
