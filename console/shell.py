"""`ConsoleShell`: what a screen may ask of the console app, as a narrow protocol.

Screens depend on this, never on `console.app.RlhfApp` (which imports the
screens it opens: depending on it back would be an import circle). `RlhfApp`
satisfies it; a test may host a screen in any app that does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine import Engine, PipelineSpec
    from store import RunRead

    from .sysinfo import SystemSampler
    from .view_models import RunRow


class ConsoleShell(Protocol):
    """The app as its screens see it: the engine, settings, navigation, acting on runs, errors."""

    engine: Engine
    clock: Callable[[], datetime]
    poll_seconds: float
    workspace_label: str
    base_dir: Path
    known_runs: list[RunRow]  # the runs screen's latest read, for the command palette

    @property
    def sampler(self) -> SystemSampler: ...

    # --- navigation
    def open_run(self, run_id: int, *, tab: str = "charts") -> None: ...
    def open_report(self, run_id: int) -> None: ...
    def compare(self, run_ids: Sequence[int]) -> None: ...
    def new_run(self) -> None: ...
    def open_playground(self, checkpoint: str | None = None) -> None: ...
    def open_rank(self, batch_id: int | None = None, annotator: str | None = None) -> None: ...

    # --- acting on runs (through the engine, with confirmation and notifications)
    def cancel_run(self, run_id: int, name: str) -> None: ...
    def resume_run(self, run_id: int) -> None: ...
    def another_round(self, run_id: int) -> None: ...
    # the demo judge ranks what a batch still needs: a run too (the rank screen asks the person first)
    def judge_rest_of_batch(self, batch_id: int) -> None: ...

    # --- runs a screen starts and stops for its own form (launch, the playground's generations):
    # awaited, and a failure is raised to the screen, which shows it under the form that caused it
    async def start_run(self, spec: PipelineSpec) -> RunRead: ...
    async def stop_run(self, run_id: int) -> None: ...

    # --- errors and housekeeping
    def describe_error(self, exc: BaseException) -> str: ...
    def show_error(self, exc: BaseException) -> None: ...
    def first_screen_loaded(self) -> None: ...
    def collect_garbage(self) -> None: ...


__all__ = ["ConsoleShell"]
