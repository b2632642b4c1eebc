"""`CheckpointsTable`: the checkpoints a run saved (resumable ones and final outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

from console.view_models import ago

from ..literal import printable
from .cells import fit_widths
from .keys import CURSOR_KEYS

if TYPE_CHECKING:
    from engine import RunDetail
    from store import CheckpointRead


def _relative(path: str, root: Path | None) -> str:
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return path


COLUMNS = (("stage", "STAGE"), ("step", "STEP"), ("kind", "KIND"), ("saved", "SAVED"),
           ("path", "PATH (in the workspace)"))


class CheckpointsTable(DataTable[Text]):
    DEFAULT_CSS = """
    CheckpointsTable {
        height: 1fr;
    }
    """

    BINDINGS = CURSOR_KEYS

    def __init__(self, *, root: Path | None = None, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self.root = root
        self._shown: list[tuple[int, str]] = []

    def show(self, detail: RunDetail, now: datetime) -> None:
        checkpoints: Sequence[CheckpointRead] = detail.checkpoints
        shown = [(c.id, ago(c.created_at, now)) for c in checkpoints]
        if shown == self._shown and self.columns:
            return
        self._shown = shown
        rows = [
            (str(c.id), [
                Text(printable(detail.stage_name(c.stage_id) or "?")),
                Text(str(c.step), justify="right"),
                Text("final" if c.is_final else "resumable", style="green" if c.is_final else ""),
                Text(ago(c.created_at, now), style="dim"),
                Text(printable(_relative(c.path, self.root))),
            ])
            for c in checkpoints
        ] or [("none", [Text("none yet", style="dim"), Text(""), Text(""), Text(""), Text("")])]
        self.clear(columns=True)
        for (key, label), width in zip(COLUMNS, fit_widths([label for _, label in COLUMNS], [r for _, r in rows],
                                                           cap=120)):
            self.add_column(Text(label, style="bold"), key=key, width=width)
        for key, cells in rows:
            self.add_row(*cells, key=key)
