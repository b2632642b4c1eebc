"""Showing untrusted text (model outputs, datasets, logs) exactly as written.

Rich markup is never parsed (callers wrap text in `rich.text.Text`), and
terminal control sequences are made visible instead of being obeyed: an
escape sequence in a log line must not recolour, move or retitle the
user's terminal.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and C1 controls (0x80-0x9f: CSI and friends).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return "\\e" if char == "\x1b" else f"\\x{ord(char):02x}"


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (`\\e`, `\\x07`)."""
    return _CONTROL.sub(_visible, text)
