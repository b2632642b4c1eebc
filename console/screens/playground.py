"""The playground: a prompt answered by one or two checkpoints, side by side.

Checkpoint A (and B, to compare) are picked from every run's checkpoints in
the store, or typed: a folder, `builtin:NAME` or a hub id. `ctrl+s` builds
the same one-stage sample pipeline as `rlhf generate` and asks the console
app to start it (`ConsoleShell.start_run`; `stop_run` cancels one replaced
or left behind): generation runs as a run of its own (a detached process
with a stage worker), never in the console, which stays torch-free and
responsive. The screen polls the store for the job's state (the engine's
reads) and, once it succeeded, shows the stored responses, A's column left
of B's (stacked on narrow terminals).

Bad settings (a temperature of -1, more responses than a batch holds, a
missing folder) come back as the engine words them, in a line under the
form; nothing is submitted then.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Header, Input, Label, Select, TextArea

from console.view_models import STATUS_STYLES, duration, first_line, status_label
from engine import EngineError, RunDetail
from engine.runtime.jobs import Answer, generate_spec, generated_answers
from store import RunStatus
from store.reads import StoreReader

from ..literal import printable
from ..widgets.answers_view import AnswersView
from ..widgets.key_bar import KeyBar
from ..widgets.text_panel import TextPanel
from .live import LiveScreen

if TYPE_CHECKING:
    from ..shell import ConsoleShell

SLOTS = ("a", "b")

#: (field id, label, default); the defaults are `rlhf generate`'s
SETTINGS = (
    ("temperature", "temperature", "0.8"),
    ("top-p", "top-p", "0.95"),
    ("max-new-tokens", "max new tokens", "128"),
    ("k", "k", "1"),
    ("seed", "seed", "0"),
)


# --- what the form offers and asks for (no Textual here) ---------------------------


@dataclass(frozen=True)
class CheckpointChoice:
    path: str
    label: str


def read_checkpoint_choices(store: StoreReader) -> list[CheckpointChoice]:
    """Every run's checkpoints, newest run first, its final models before its
    resumable steps. Read in a thread (it is a few SQLite queries)."""
    checkpoints = store.list_checkpoints()
    runs = {run.id: run for run in store.list_runs()}
    stage_names: dict[int, str] = {}
    for run_id in {c.run_id for c in checkpoints}:
        stage_names.update((s.id, s.name) for s in store.list_stages(run_id=run_id))
    ordered = sorted(checkpoints, key=lambda c: (-c.run_id, not c.is_final, -c.step, -c.id))
    choices = []
    for checkpoint in ordered:
        run = runs.get(checkpoint.run_id)
        where = "final" if checkpoint.is_final else f"step {checkpoint.step}"
        # Short: the list is as wide as its field, a third of an 80-column terminal.
        label = f"#{checkpoint.run_id} {run.name if run else '?'}/{stage_names.get(checkpoint.stage_id, '?')} {where}"
        choices.append(CheckpointChoice(path=checkpoint.path, label=printable(label)))
    return choices


class FormError(Exception):
    """A field the console can check itself (empty, not a number)."""


@dataclass(frozen=True)
class Request:
    prompt: str
    checkpoints: list[str]  # A, then B when given
    temperature: float
    top_p: float
    max_new_tokens: int
    k: int
    seed: int


def _number(label: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormError(f"{label}: expected a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise FormError(f"{label}: expected a finite number, got {text.strip()!r}")
    return value


def _whole(label: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FormError(f"{label}: expected a whole number, got {text.strip()!r}") from None


def build_request(prompt: str, checkpoints: Sequence[str], settings: dict[str, str]) -> Request:
    """The form's values, checked only as far as the console can check them:
    ranges and references are the engine's to judge (one place for the rules)."""
    if not prompt.strip():
        raise FormError("write a prompt first")
    chosen = [c.strip() for c in checkpoints]
    if not chosen[0]:
        raise FormError("choose checkpoint A (from the list, or type a folder, builtin:NAME or a hub id)")
    return Request(
        prompt=prompt,
        checkpoints=[c for c in chosen if c],
        temperature=_number("temperature", settings["temperature"]),
        top_p=_number("top-p", settings["top-p"]),
        max_new_tokens=_whole("max new tokens", settings["max-new-tokens"]),
        k=_whole("k", settings["k"]),
        seed=_whole("seed", settings["seed"]),
    )


def plain_error(message: str) -> str:
    """The engine's message without the prefixes that name `rlhf generate`'s
    made-up spec: the field is what a person here needs to read."""
    lines = []
    for line in message.splitlines():
        for prefix in ("rlhf generate: stage 'generate', ", "rlhf generate: ", "generate: "):
            if line.startswith(prefix):
                line = line[len(prefix):]
                break
        lines.append(line)
    return "\n".join(lines)


@dataclass
class Job:
    """A generation this screen submitted and follows."""

    run_id: int
    titles: list[str]  # one column title per checkpoint, in the order given
    finished: bool = False


def job_status(detail: RunDetail, job: Job) -> Text:
    """One line: queued / loading / generating n of N / done / failed, with why."""
    run = detail.run
    stage = detail.stages[0] if detail.stages else None
    status = str(run.status)
    text = Text(status_label(status), style=STATUS_STYLES.get(status, ""))
    if run.status == RunStatus.QUEUED:
        text.append(": waiting for a free slot")
    elif run.status == RunStatus.RUNNING:
        if stage is not None and stage.total:
            text.append(f": generating, {stage.step} of {stage.total} responses")
        else:
            text.append(": loading the model")
    elif run.status == RunStatus.SUCCEEDED:
        took = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
        text.append(f" in {duration(took)}")
    else:
        reason = (stage.error if stage is not None and stage.error else None) or run.error
        if reason:
            text.append(": " + printable(first_line(reason)))
    text.append(f"  (run #{job.run_id}", style="dim")
    if run.status in (RunStatus.FAILED, RunStatus.CRASHED):
        text.append(f"; its log: rlhf logs {job.run_id}", style="dim")
    text.append(")", style="dim")
    if not run.status.is_active:
        text.append("  ctrl+s generates again, ctrl+r with a new seed", style="dim")
    return text


def answer_columns(answers: Sequence[Answer], titles: Sequence[str]) -> list[tuple[str, list[Answer]]]:
    """The answers of one prompt grouped by checkpoint. `generated_answers`
    orders them by checkpoint as given, so the n-th group is the n-th title."""
    groups: dict[str, list[Answer]] = {}
    for answer in answers:
        groups.setdefault(answer.checkpoint, []).append(answer)
    return [(titles[i] if i < len(titles) else name, group) for i, (name, group) in enumerate(groups.items())]


async def _cancel_quietly(shell: ConsoleShell, run_id: int) -> None:
    with contextlib.suppress(EngineError):  # it ended meanwhile: nothing to stop
        await shell.stop_run(run_id)


# --- the screen ---------------------------------------------------------------------


class PlaygroundScreen(LiveScreen):
    BINDINGS = [
        Binding("ctrl+s", "generate", "Generate", tooltip="answer the prompt with checkpoint A (and B)"),
        Binding("ctrl+r", "generate_new_seed", "New seed", tooltip="the next seed, then generate again"),
        Binding("escape", "back", "Back", tooltip="back (a generation still running is cancelled)"),
    ]

    def __init__(self, *, checkpoint: str | None = None) -> None:
        super().__init__(id="playground")
        self.initial_checkpoint = checkpoint
        self.choices: list[CheckpointChoice] = []
        self.job: Job | None = None
        self.status = Text()  # the status line as last shown
        self._submitting = False

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Vertical(id="playground-form"):
            yield TextArea(id="prompt", placeholder="A prompt (several lines are fine). ctrl+s generates.",
                           soft_wrap=True, show_line_numbers=False, compact=True)
            for slot in SLOTS:
                with Horizontal(classes="checkpoint-row"):
                    yield Label(f"{slot.upper()} ", classes="slot-label")
                    yield Select[str]([], prompt="from the store", compact=True, id=f"pick-{slot}")
                    yield Input(
                        placeholder="a folder, builtin:NAME or a hub id" if slot == "a"
                        else "optional: a second checkpoint, side by side",
                        compact=True, id=f"checkpoint-{slot}")
            with Horizontal(id="playground-settings"):
                for field, label, default in SETTINGS:
                    yield Label(f"{label} ")
                    yield Input(default, compact=True, id=field, classes="setting")
        yield TextPanel(id="playground-status")
        yield AnswersView(id="answers")
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = "rlhf-console"
        self.sub_title = "playground"
        if self.initial_checkpoint:
            self.query_one("#checkpoint-a", Input).value = self.initial_checkpoint
        self.query_one(AnswersView).fit(self.app.size.width)
        self._hint()
        self.query_one("#prompt").focus()
        super().on_mount()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one(AnswersView).fit(event.size.width)

    # --- the store: checkpoints to offer, the job's progress -----------------------------

    def is_quiet(self) -> bool:
        return self.job is None or self.job.finished

    async def refresh_data(self) -> None:
        engine = self.rlhf.engine
        choices = await asyncio.to_thread(read_checkpoint_choices, engine.reads)
        if choices != self.choices:
            self._offer(choices)
        job = self.job
        if job is None or job.finished:
            return
        detail = await engine.detail(job.run_id)
        if self.job is not job:
            return  # replaced by a newer generation while this was read
        if detail.run.status == RunStatus.SUCCEEDED:
            answers = await generated_answers(engine, job.run_id)
            if self.job is not job:
                return
            self.query_one(AnswersView).show(answer_columns(answers, job.titles))
        job.finished = not detail.run.status.is_active
        self._status(job_status(detail, job))

    def _offer(self, choices: list[CheckpointChoice]) -> None:
        selects = [self.query_one(f"#pick-{slot}", Select) for slot in SLOTS]
        if any(select.expanded for select in selects):
            return  # not under the person's cursor: the next refresh offers them
        self.choices = choices
        for slot, select in zip(SLOTS, selects):
            typed = self.query_one(f"#checkpoint-{slot}", Input).value.strip()
            select.set_options([(Text(c.label), c.path) for c in choices])
            select.prompt = "from the store" if choices else "no checkpoints in the store yet"
            if any(c.path == typed for c in choices):
                with select.prevent(Select.Changed):
                    select.value = typed

    def on_select_changed(self, event: Select.Changed) -> None:
        slot = (event.select.id or "").removeprefix("pick-")
        if slot in SLOTS and isinstance(event.value, str):
            self.query_one(f"#checkpoint-{slot}", Input).value = event.value

    def on_input_changed(self, event: Input.Changed) -> None:
        slot = (event.input.id or "").removeprefix("checkpoint-")
        if slot not in SLOTS:
            return
        select = self.query_one(f"#pick-{slot}", Select)
        if select.value != Select.NULL and select.value != event.value.strip():
            with select.prevent(Select.Changed):
                select.clear()  # typed over the picked path: the list no longer says what is chosen

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_generate()  # enter in any one-line field

    # --- generating --------------------------------------------------------------------

    def action_generate(self) -> None:
        if self._submitting:
            return
        try:
            request = build_request(
                self.query_one("#prompt", TextArea).text,
                [self.query_one(f"#checkpoint-{slot}", Input).value for slot in SLOTS],
                {field: self.query_one(f"#{field}", Input).value for field, _, _ in SETTINGS},
            )
        except FormError as exc:
            self._problem(str(exc))
            return
        self._submitting = True
        self.run_worker(self._submit(request), group="generate", exit_on_error=False)

    def action_generate_new_seed(self) -> None:
        seed = self.query_one("#seed", Input)
        try:
            seed.value = str(int(seed.value) + 1)
        except ValueError:
            seed.value = "0"
        self.action_generate()

    async def _submit(self, request: Request) -> None:
        try:
            spec = await asyncio.to_thread(
                generate_spec, request.checkpoints, [request.prompt], k=request.k,
                temperature=request.temperature, top_p=request.top_p, max_new_tokens=request.max_new_tokens,
                seed=request.seed, base_dir=self.rlhf.base_dir,
            )
            previous = self.job
            if previous is not None and not previous.finished:
                # Replaced: on a CPU box runs take turns, and the old one would hold the new one up.
                await _cancel_quietly(self.rlhf, previous.run_id)
            run = await self.rlhf.start_run(spec)
        except EngineError as exc:
            self._problem(plain_error(str(exc)))
            return
        except Exception as exc:  # noqa: BLE001  shown, never fatal
            self._problem(f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._submitting = False
        self.job = Job(run_id=run.id, titles=[self._title(slot, ref) for slot, ref in zip(SLOTS, request.checkpoints)])
        self.query_one(AnswersView).show(())
        self._status(Text(status_label("queued"), style=STATUS_STYLES["queued"]).append(
            f"  (run #{run.id})", style="dim"))
        self.request_refresh()

    def _title(self, slot: str, reference: str) -> str:
        label = next((c.label for c in self.choices if c.path == reference), None)
        if label is None:
            label = reference
            with contextlib.suppress(ValueError):  # a folder in the workspace reads better from the workspace
                label = str(Path(reference).relative_to(self.rlhf.engine.workspace.root))
        return f"{slot.upper()} · {label}"

    # --- the status line -----------------------------------------------------------------

    def _hint(self) -> None:
        self._status(Text("ctrl+s generates (enter in a one-line field too); tab moves between fields",
                          style="dim"))

    def _status(self, text: Text) -> None:
        self.status = text
        self.query_one("#playground-status", TextPanel).set_text(text)

    def _problem(self, message: str) -> None:
        self._status(Text(printable(message), style="bold red"))

    # --- leaving -------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    async def on_unmount(self) -> None:
        # A generation left running is cancelled: its answers would show nowhere
        # but in its own run, and on a CPU box it would hold up the next run queued.
        job = self.job
        if job is not None and not job.finished:
            await _cancel_quietly(self.rlhf, job.run_id)
