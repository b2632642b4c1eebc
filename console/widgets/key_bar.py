"""`KeyBar`: the keys of the focused pane and the screen, on one line at the bottom.

Textual's `Footer` mounts one widget per key and does it again whenever the
bindings change (every focus change: every tab switched), which costs tens
of milliseconds a time on a busy machine. This draws the same hints as one
line of text, so a key press is answered by a cheap repaint.
"""

from __future__ import annotations

from rich.text import Text
from textual.screen import Screen
from textual.widget import Widget


class KeyBar(Widget):
    COMPONENT_CLASSES = {"keybar--key"}

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $panel;
        color: $foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        padding: 0 1;
    }
    KeyBar > .keybar--key {
        color: $accent;
        text-style: bold;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Text()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self._update)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen:
            self._update()

    def _update(self) -> None:
        key_style = self.get_component_rich_style("keybar--key")
        text = Text(no_wrap=True, overflow="ellipsis")
        seen: set[str] = set()
        # The app's own keys (? and q) first: at 80 columns the line is cut at the right.
        bindings = sorted(self.screen.active_bindings.values(), key=lambda a: a.node is not self.app)
        for active in bindings:
            binding = active.binding
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            if text:
                text.append("  ")
            text.append(self.app.get_key_display(binding), style=key_style)
            text.append(f" {binding.description}", style="" if active.enabled else "dim")
        text.append("  ")
        text.append("^p", style=key_style)
        text.append(" commands")
        if text != self._text:
            self._text = text
            self.refresh()

    def render(self) -> Text:
        return self._text
