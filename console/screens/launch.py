"""The launch screen: start a pipeline from a built-in template (its main
fields in a form) or from a spec file. Problems come back one line per field,
as `rlhf run` prints them; nothing is recorded until the spec is valid.
Dismissed with the new run's id (the app then opens its run screen)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Header, Input, Label, Select, Static

from engine import EngineError, PipelineSpec, load_spec

from ..forms import Template, build_spec, form_fields
from ..literal import printable
from ..widgets.key_bar import KeyBar
from ..widgets.spec_form import SpecForm

if TYPE_CHECKING:
    from ..shell import ConsoleShell

FILE = "\x00file"  # the source choice meaning "a spec file"


class LaunchScreen(Screen[int | None]):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, templates: list[Template], *, base_dir: Path) -> None:
        super().__init__(id="launch")
        self.templates = templates
        self.base_dir = base_dir
        self._starting = False

    @property
    def rlhf(self) -> ConsoleShell:
        """The app, as the narrow protocol screens may use (console/shell.py)."""
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Horizontal(id="launch-source"):
            yield Label("start from ")
            options = [(Text(t.title), t.name) for t in self.templates]
            options.append((Text("a pipeline spec file (TOML)"), FILE))
            yield Select(options, value=self.templates[0].name if self.templates else FILE,
                         allow_blank=False, compact=True, id="source")
        with Vertical(id="launch-file"):
            yield Input(placeholder="path/to/pipeline.toml", id="spec-path", compact=True)
            yield Static(Text("a pipeline spec; `rlhf init` writes a commented example", style="dim"))
        yield SpecForm(form_fields(self.templates[0]) if self.templates else (), id="form")
        yield Static(id="problems", markup=False)
        with Horizontal(id="launch-buttons"):
            yield Button("Start run (ctrl+s)", id="start", variant="success", compact=True)
            yield Button("Back (esc)", id="back", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = "new run"
        self._show_source()
        self.query_one("#source").focus()

    @property
    def source(self) -> str:
        return str(self.query_one("#source", Select).value)

    def _template(self) -> Template | None:
        return next((t for t in self.templates if t.name == self.source), None)

    def _show_source(self) -> None:
        is_file = self.source == FILE
        self.query_one("#launch-file").display = is_file
        self.query_one(SpecForm).display = not is_file

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "source":
            return
        self._problems("")
        self._show_source()
        template = self._template()
        if template is not None:
            await self.query_one(SpecForm).set_fields(form_fields(template))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        elif event.button.id == "back":
            self.action_back()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "spec-path":
            self.action_start()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_start(self) -> None:
        if not self._starting:
            self._starting = True
            self.run_worker(self._start(), group="launch", exit_on_error=False)

    async def _start(self) -> None:
        try:
            spec = await asyncio.to_thread(self._spec)
            run = await self.rlhf.start_run(spec)
        except EngineError as exc:
            self._problems(str(exc))
            return
        except Exception as exc:  # noqa: BLE001  shown, never fatal
            self._problems(f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._starting = False
        self.app.notify(f"started run {run.id} '{printable(run.name)}'", markup=False)
        self.dismiss(run.id)

    def _spec(self) -> PipelineSpec:
        if self.source == FILE:
            path = self.query_one("#spec-path", Input).value.strip()
            if not path:
                raise _NoPath("give the path of a pipeline spec file (TOML)")
            return load_spec(Path(path).expanduser() if Path(path).expanduser().is_absolute()
                             else self.base_dir / path)
        template = self._template()
        assert template is not None
        return build_spec(template, self.query_one(SpecForm).values(), base_dir=self.base_dir)

    def _problems(self, message: str) -> None:
        box = self.query_one("#problems", Static)
        box.display = bool(message)
        box.update(Text(printable(message), style="bold red"))


class _NoPath(EngineError):
    pass
