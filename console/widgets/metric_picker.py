"""`MetricPicker`: the metric groups a run (or several) logged; the highlighted one is charted."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ..literal import printable
from .keys import CURSOR_KEYS


class MetricPicker(OptionList):
    DEFAULT_CSS = """
    MetricPicker {
        width: 24;
        height: 1fr;
        border: none;
        padding: 0;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    MetricPicker:focus {
        border: none;
    }

    """

    BINDINGS = [
        *CURSOR_KEYS,
        Binding("g", "first", "First", show=False),
        Binding("G", "last", "Last", show=False),
    ]

    def set_choices(self, choices: Sequence[tuple[str, str]], selected: str | None) -> str | None:
        """(id, label) choices; keeps `selected` highlighted if still there.
        Returns the id highlighted afterwards."""
        current = [(o.id, o.prompt) for o in self.options]
        wanted = [(choice_id, label) for choice_id, label in choices]
        if [c[0] for c in current] != [w[0] for w in wanted] or any(
            str(p) != label for (_, p), (_, label) in zip(current, wanted)
        ):
            with self.prevent(OptionList.OptionHighlighted):
                self.clear_options()
                self.add_options(Option(Text(printable(label), no_wrap=True, overflow="ellipsis"), id=choice_id)
                                 for choice_id, label in choices)
        ids = [choice_id for choice_id, _ in choices]
        if not ids:
            return None
        index = ids.index(selected) if selected in ids else 0
        if self.highlighted != index:
            with self.prevent(OptionList.OptionHighlighted):
                self.highlighted = index
        return ids[index]

    @property
    def selected_id(self) -> str | None:
        option = self.highlighted_option
        return option.id if option is not None else None
