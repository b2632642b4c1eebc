"""`RankingBar`: what the keys do on this item, and the order being typed.

For a pair it lists the verdict keys. For K > 2 responses the annotator
types the responses' numbers best first (`RankingDraft`): the order fills in
as "3 > 1 > _ > _", backspace takes back the last, and once K - 1 are placed
the last is implied, so enter submits after K - 1 digits. Typing is the
fastest way to order a handful of things: one key per response, no cursor
to steer, and the order reads left to right as it was meant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text

from .text_panel import TextPanel

KEY_STYLE = "bold cyan"


@dataclass
class RankingDraft:
    """Responses (0-based, in shown order) placed best first, as typed."""

    size: int
    placed: list[int] = field(default_factory=list)

    def place(self, index: int) -> bool:
        """Place response `index` next; False when it is placed already or out of range."""
        if not 0 <= index < self.size or index in self.placed or self.complete:
            return False
        self.placed.append(index)
        return True

    def back(self) -> bool:
        if not self.placed:
            return False
        self.placed.pop()
        return True

    @property
    def implied(self) -> int | None:
        """The one response left once all others are placed: it can only be last."""
        if len(self.placed) != self.size - 1:
            return None
        return next(i for i in range(self.size) if i not in self.placed)

    @property
    def complete(self) -> bool:
        return len(self.placed) >= self.size - 1

    def order(self) -> list[int]:
        """The full order, best first (only when complete)."""
        implied = self.implied
        return [*self.placed, implied] if implied is not None else list(self.placed)

    def place_of(self, index: int) -> int | None:
        """1-based place of response `index` in the order so far."""
        order = self.order()
        return order.index(index) + 1 if index in order else None


def ordinal(place: int) -> str:
    suffix = "th" if 10 <= place % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(place % 10, "th")
    return f"{place}{suffix}"


def order_text(draft: RankingDraft) -> Text:
    """'3 > 1 > _ > _' with the implied last response dimmed: '3 > 1 > 4 > (2)'."""
    text = Text()
    for place in range(draft.size):
        if place:
            text.append(" > ", style="dim")
        if place < len(draft.placed):
            text.append(str(draft.placed[place] + 1), style="bold")
        elif place == len(draft.placed) and draft.implied is not None:
            text.append(f"({draft.implied + 1})", style="dim bold")
        else:
            text.append("_", style="dim")
    return text


def _keys(*pairs: tuple[str, str]) -> Text:
    text = Text()
    for key, what in pairs:
        if text:
            text.append("  ")
        text.append(key, style=KEY_STYLE)
        text.append(f" {what}")
    return text


# Both key lines fit 80 columns; `?` explains each key at length.
PAIR_KEYS = _keys(("1/←", "A"), ("2/→", "B"), ("=", "tie"), ("b", "both bad"), ("s", "skip"), ("u", "undo"),
                  ("c", "comment"), ("n/p", "move"), ("?", "help"))


def ranking_keys(size: int, complete: bool) -> Text:
    keys = _keys((f"1-{size}", "order"), ("⌫", "back"), ("enter", "submit"), ("=", "tie"), ("b", "bad"),
                 ("s", "skip"), ("u", "undo"), ("c", "note"), ("?", "help"))
    if not complete:
        keys.stylize("dim", *_span(keys, "enter submit"))
    return keys


def _span(text: Text, part: str) -> tuple[int, int]:
    start = text.plain.index(part)
    return start, start + len(part)


class RankingBar(TextPanel):
    """Two lines: the order typed so far (or the verdict on record), then the keys."""

    DEFAULT_CSS = """
    RankingBar {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    """

    def show_pair(self, verdict: Text | None) -> None:
        first = verdict if verdict is not None else Text("Which response is better, A or B?", style="bold")
        self.set_text(Text("\n").join([first, PAIR_KEYS]))

    def show_ranking(self, draft: RankingDraft, verdict: Text | None) -> None:
        first = Text("your order, best first: ", style="bold").append_text(order_text(draft))
        if draft.complete:
            first.append("   enter submits", style="bold green")
        if verdict is not None and not draft.placed:
            first = verdict
        self.set_text(Text("\n").join([first, ranking_keys(draft.size, draft.complete)]))

    def show_done(self) -> None:
        self.set_text(Text("\n").join([
            Text("Nothing left for you in this batch.", style="bold"),
            _keys(("u", "undo the last"), ("n/p", "browse the batch"), ("esc", "leave"), ("?", "help")),
        ]))
