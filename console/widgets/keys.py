"""Vim-style movement shared by the console's lists (not a widget)."""

from __future__ import annotations

from textual.binding import Binding, BindingType

#: j/k as down/up on widgets with a cursor (DataTable, OptionList)
CURSOR_KEYS: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
]

#: j/k as scrolling on widgets without a cursor (logs, text)
SCROLL_KEYS: list[BindingType] = [
    Binding("j", "scroll_down", "Down", show=False),
    Binding("k", "scroll_up", "Up", show=False),
    Binding("g", "scroll_home", "Top", show=False),
    Binding("G", "scroll_end", "Bottom", show=False),
]
