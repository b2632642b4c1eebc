"""What the active order's job last found, as the batch's settings keep it (torch- and numpy-free:
the rank screen reads it).

engine.feedback.stored.active_order writes it after every refresh under the
batch settings key `active`: judgements in, the ensemble's held-out pair
accuracy, its history (judgements, accuracy) and trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store import Feedback

#: the batch settings key the state is written under
SETTINGS_KEY = "active"


@dataclass(frozen=True)
class ActiveState:
    """What a refresh found: judgements in, held-out accuracy (None: nothing held out yet)."""

    judgements: int
    heldout_accuracy: float | None
    history: tuple[tuple[int, float], ...]
    trend: str

    def to_json(self) -> dict[str, Any]:
        return {"judgements": self.judgements, "heldout_accuracy": self.heldout_accuracy,
                "history": [list(point) for point in self.history], "trend": self.trend}


def read_state(feedback: Feedback, batch_id: int) -> ActiveState | None:
    """The last refresh's state of a batch served in active order (None: not active)."""
    found = feedback.batch_settings(batch_id=batch_id).get(SETTINGS_KEY)
    if not isinstance(found, dict):
        return None
    history = tuple((int(n), float(acc)) for n, acc in found.get("history", []))
    accuracy = found.get("heldout_accuracy")
    return ActiveState(judgements=int(found.get("judgements", 0)),
                       heldout_accuracy=None if accuracy is None else float(accuracy),
                       history=history, trend=str(found.get("trend", "")))


__all__ = ["SETTINGS_KEY", "ActiveState", "read_state"]
