"""`RlhfApp`: the Textual console. `rlhf tui` opens it; `rlhf demo` opens it on the demo run.

It reads the store through the read API (`engine.reads`, store/reads.py) and
changes anything (runs, judgements) only through the `Engine` it is given;
its screens see it through the narrow `ConsoleShell` protocol
(console/shell.py), never as this class. It imports nothing heavier than
Textual and the engine's torch-free API (not even the store's ORM, until a
screen needs it): the
runs it shows are other processes, which is why quitting it (`q`), or losing
the terminal, never stops one. Screens other than the first are imported
when first shown, to keep start-up fast.

Errors the engine or the store raise on purpose (`EngineError`,
`StoreError`) become notifications; so does anything unexpected in a
background refresh. The console does not crash because a run did.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.markup import escape
from textual.screen import ModalScreen, Screen

from console.view_models import RunRow
from engine import Engine, EngineError
from store import StoreError, utcnow
from store.reads import StoreReader

from .literal import printable
from .sysinfo import SystemSampler

if TYPE_CHECKING:
    from engine import PipelineSpec
    from store import RunRead

#: seconds between full garbage collections, once the console manages them
GC_FULL_SECONDS = 5.0


class RlhfApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "rlhf-console"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {lambda: RunCommands}

    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit the console; runs keep going"),
        Binding("question_mark", "keys", "Keys"),
        # Hidden from the key bar (it is full at 80 columns); the keys screen lists it for every screen.
        Binding("p", "playground", "Playground", show=False,
                tooltip="playground: a prompt answered by one or two checkpoints side by side"),
        Binding("a", "rank", "Rank", show=False,
                tooltip="annotate: rank a batch of responses side by side (pick the batch)"),
        # Naming the palette's action here replaces Textual's own ctrl+p binding, so both are ours.
        Binding("ctrl+p", "command_palette", "Commands", show=False, priority=True),
        Binding("colon", "command_palette", "Commands", show=False),
    ]

    def __init__(
        self,
        engine: Engine,
        *,
        sampler: SystemSampler | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = 1.0,
        open_run: int | None = None,
        open_rank: tuple[int | None, str | None] | None = None,
        rank_when_asked: bool = False,
        templates: Sequence[Any] | None = None,
        workspace_label: str | None = None,
        base_dir: Path | None = None,
        manage_gc: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self._sampler = sampler
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.open_run_id = open_run
        self.open_rank_on_start = open_rank  # (batch id or None = pick one, annotator or None = login name)
        # The demo: when the opened run's rank stage waits for people, open the rank screen on its batch.
        self.rank_when_asked = rank_when_asked
        self._templates = list(templates) if templates is not None else None
        self.workspace_label = printable(workspace_label or _home_relative(engine.workspace.root))
        self.base_dir = base_dir or Path.cwd()
        self.known_runs: list[RunRow] = []  # the runs screen's latest read, for the command palette
        self.manage_gc = manage_gc
        self._heap_frozen = False
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # No sliding tab underlines or smooth scrolling: over SSH every frame is
            # bytes on the wire, and on a busy machine each costs the next key its CPU.
            self.animation_level = "none"

    @property
    def sampler(self) -> SystemSampler:
        if self._sampler is None:
            from .sysinfo import LocalSampler

            self._sampler = LocalSampler()
        return self._sampler

    @property
    def templates(self) -> list[Any]:
        if self._templates is None:
            from .forms import builtin_templates

            self._templates = builtin_templates()
        return self._templates

    def get_default_screen(self) -> Screen[Any]:
        from .screens.runs import RunsScreen

        return RunsScreen()

    def on_mount(self) -> None:
        if self.open_run_id is not None:
            self.open_run(self.open_run_id)
        if self.open_rank_on_start is not None:
            self.open_rank(*self.open_rank_on_start)
        if self.rank_when_asked and self.open_run_id is not None:
            self._rank_watch = self.set_interval(2.0, self._rank_if_asked)

    async def _rank_if_asked(self) -> None:
        """Once: when the run's rank stage is waiting for people, take them to its batch."""
        run_id = self.open_run_id
        batch = await asyncio.to_thread(_batch_waiting_for_people, self.engine.reads, run_id)
        if batch is None:
            return
        self._rank_watch.stop()
        self.notify("Your turn: rank a few answers (1/2, = tie, b both bad; ? for keys). "
                    "J hands the rest to the demo judge.", timeout=12, markup=False)
        self.open_rank(batch)

    def first_screen_loaded(self) -> None:
        """Called once the first screen shows its data; from then on the console
        decides when Python collects garbage.

        Everything alive now (modules, the ORM's and Textual's tables) is frozen
        out of the collector's sight, and automatic collection is replaced by
        small collections between refreshes and a full one every few seconds,
        on a timer. Left automatic, a full collection (~80 ms on a busy 2-core
        machine) starts whenever allocations cross a threshold, and the burst
        of allocations that paints a key press's frame is the likeliest moment."""
        if self._heap_frozen or not self.manage_gc:
            return
        self._heap_frozen = True
        gc.collect()
        gc.freeze()
        gc.disable()
        self.set_interval(GC_FULL_SECONDS, lambda: gc.collect(2))

    def collect_garbage(self) -> None:
        """A young-generation collection: a few milliseconds, after each refresh."""
        if self._heap_frozen:
            gc.collect(1)

    def on_unmount(self) -> None:
        if self._heap_frozen:  # leave the interpreter as we found it (tests run many apps)
            self._heap_frozen = False
            gc.unfreeze()
            gc.enable()

    # --- errors -------------------------------------------------------------------------

    @staticmethod
    def describe_error(exc: BaseException) -> str:
        if isinstance(exc, (EngineError, StoreError)):
            return str(exc) or type(exc).__name__
        return f"{type(exc).__name__}: {exc}"

    def show_error(self, exc: BaseException) -> None:
        expected = isinstance(exc, (EngineError, StoreError))
        self.notify(
            printable(self.describe_error(exc)),
            title="" if expected else "unexpected error (the console keeps going)",
            severity="error", markup=False, timeout=8,
        )

    # --- navigation ---------------------------------------------------------------------

    def open_run(self, run_id: int, *, tab: str = "charts") -> None:
        from .screens.run import RunScreen

        self.push_screen(RunScreen(run_id, tab=tab))

    def open_report(self, run_id: int) -> None:
        from .screens.report import ReportScreen

        self.push_screen(ReportScreen(run_id))

    def compare(self, run_ids: Sequence[int]) -> None:
        from .screens.compare import CompareScreen

        self.push_screen(CompareScreen(list(run_ids)))

    def new_run(self) -> None:
        from .screens.launch import LaunchScreen

        def opened(run_id: int | None) -> None:
            if run_id is not None:
                self.open_run(run_id)

        self.push_screen(LaunchScreen(self.templates, base_dir=self.base_dir), callback=opened)

    def open_playground(self, checkpoint: str | None = None) -> None:
        """The playground, with `checkpoint` as A when given (the run screen's `p`)."""
        from .screens.playground import PlaygroundScreen

        if isinstance(self.screen, PlaygroundScreen):
            return  # one is enough: going back to it from another would lose nothing but confuse
        self.push_screen(PlaygroundScreen(checkpoint=checkpoint))

    def action_playground(self) -> None:
        self.open_playground()

    def open_rank(self, batch_id: int | None = None, annotator: str | None = None) -> None:
        """The rank screen on a batch; with none, the batch picker first."""
        from .screens.rank import RankScreen, default_annotator
        from .screens.rank_batches import RankBatchesScreen

        def show(chosen: int | None) -> None:
            if chosen is not None:
                self.push_screen(RankScreen(
                    self.engine.annotation, batch_id=chosen, annotator=annotator or default_annotator(),
                    workspace_root=self.engine.workspace.root,
                ))

        if batch_id is None:
            self.push_screen(RankBatchesScreen(self.engine.reads, self.engine.annotation), show)
        else:
            show(batch_id)

    def action_rank(self) -> None:
        self.open_rank()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "playground":
            # Not over a dialog (it waits for an answer), nor over the playground itself.
            return not isinstance(self.screen, ModalScreen) and self.screen.id != "playground"
        if action == "rank":
            # By id, not by class: importing the rank screens (and the store's ORM they need)
            # to answer this would cost the first screen its start-up time.
            return not isinstance(self.screen, ModalScreen) and self.screen.id not in ("rank", "rank-batches")
        return super().check_action(action, parameters)

    def go_home(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    # --- acting on runs -------------------------------------------------------------------

    def cancel_run(self, run_id: int, name: str) -> None:
        from .screens.confirm import ConfirmScreen

        question = Text.assemble(
            ("Cancel run ", "bold"), (f"#{run_id} ", "bold"), (printable(name), "bold"), ("?\n\n", "bold"),
            "Its stage saves a checkpoint, then every process of the run stops. "
            "Resume it later with r (or `rlhf resume`).",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._cancel(run_id), group="act", exit_on_error=False)

        self.push_screen(ConfirmScreen(question, yes="Cancel run", no="Keep running"), callback=answered)

    async def _cancel(self, run_id: int) -> None:
        try:
            run = await self.engine.cancel(run_id)
        except Exception as exc:  # noqa: BLE001  EngineError/StoreError expected; anything else shown too
            self.show_error(exc)
            return
        state = "stop requested" if run.status.is_active else run.status.value
        self.notify(printable(f"run #{run.id} '{run.name}': {state}"), markup=False)
        self._refresh_screen()

    def resume_run(self, run_id: int) -> None:
        self.run_worker(self._resume(run_id), group="act", exit_on_error=False)

    async def _resume(self, run_id: int) -> None:
        try:
            run = await self.engine.resume(run_id)
        except Exception as exc:  # noqa: BLE001
            self.show_error(exc)
            return
        self.notify(printable(f"run #{run.id} '{run.name}' resumed (attempt {run.attempt})"), markup=False)
        self._refresh_screen()

    def another_round(self, run_id: int) -> None:
        """Iterated RLHF: the next round of a finished run (engine.recipe.rounds), opened on its run screen.
        People rank it, like the demo in the console (J hands the rest to the judge)."""
        self.run_worker(self._another_round(run_id), group="act", exit_on_error=False)

    async def _another_round(self, run_id: int) -> None:
        try:
            run = await self.engine.next_round(run_id, judge=None)
        except Exception as exc:  # noqa: BLE001
            self.show_error(exc)
            return
        self.notify(printable(f"round run #{run.id} '{run.name}' started"), markup=False)
        self.open_run_id = run.id
        self.open_run(run.id)
        self.rank_when_asked = True
        self._rank_watch = self.set_interval(2.0, self._rank_if_asked)

    def judge_rest_of_batch(self, batch_id: int) -> None:
        """The demo judge ranks what batch `batch_id` still needs, as an engine job (a run of its own):
        recorded as judge:demo, never as the person who asked (J on the rank screen, after it confirmed)."""
        self.run_worker(self._judge_rest_of_batch(batch_id), group="act", exit_on_error=False)

    async def _judge_rest_of_batch(self, batch_id: int) -> None:
        from engine.runtime.jobs import rank_spec

        try:
            run = await self.engine.submit(rank_spec(batch_id, judge="demo"))
        except Exception as exc:  # noqa: BLE001  shown, never a crash of the console
            self.show_error(exc)
            return
        self.notify(f"judge:demo ranks the rest of batch #{batch_id} (run #{run.id}); your judgements stay yours.",
                    markup=False, timeout=8)

    async def start_run(self, spec: PipelineSpec) -> RunRead:
        """Submit `spec` for a screen that built it from its own form (launch, the playground).
        Awaited, not an 'act' worker: the screen needs the new run, and shows a refusal (a spec
        problem, one line per field) under its form rather than as a notification."""
        return await self.engine.submit(spec)

    async def stop_run(self, run_id: int) -> None:
        """Cancel, without asking, a run the screen started itself (the playground's replaced or
        abandoned generation). A run that ended meanwhile raises `InvalidRunState`."""
        await self.engine.cancel(run_id)

    def _refresh_screen(self) -> None:
        request = getattr(self.screen, "request_refresh", None)
        if request is not None:
            request()

    # --- keys ------------------------------------------------------------------------------

    def action_keys(self) -> None:
        from .screens.keys import KeysScreen

        if isinstance(self.screen, KeysScreen):
            return
        seen: set[str] = set()
        keys = []
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if not binding.description or key in seen or key in _EVERYWHERE_KEYS:
                continue
            if (key, binding.action) not in _own_bindings(type(active.node)):
                continue  # Textual's own cursor keys: the list of keys for every screen covers them
            seen.add(key)
            keys.append((self.get_key_display(binding), binding.tooltip or binding.description))
        title = {
            "runs": "runs", "compare": "compare", "launch": "new run", "playground": "playground",
        }.get(self.screen.id or "", "run" if (self.screen.id or "").startswith("run-") else "this screen")
        self.push_screen(KeysScreen(title, keys))


def _batch_waiting_for_people(reads: StoreReader, run_id: int | None) -> int | None:
    """The batch a running rank stage of the run without a judge waits on: the
    stage records it (`batch_id`) in its resolved config once the items exist."""
    if run_id is None:
        return None
    for stage in reads.list_stages(run_id=run_id):
        batch_id = stage.config.get("batch_id")
        if stage.kind == "rank" and stage.status.value == "running" and not stage.config.get("judge") and batch_id:
            return int(batch_id)
    return None


#: keys the keys screen explains once for every screen
_EVERYWHERE_KEYS = {"q", "question_mark", "colon", "ctrl+p", "p", "a", "j", "k", "g", "G", "tab", "shift+tab"}


def _own_bindings(cls: type) -> set[tuple[str, str]]:
    """(key, action) of the bindings the console's own classes declare."""
    own: set[tuple[str, str]] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("console."):
            for binding in klass.__dict__.get("BINDINGS", ()):
                if isinstance(binding, Binding):
                    own.update((key.strip(), binding.action) for key in binding.key.split(","))
    return own


def _home_relative(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


# --- the command palette ------------------------------------------------------------------


class RunCommands(Provider):
    """Open, cancel or resume any run; new run; compare; back to the runs list."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app: RlhfApp = self.app  # type: ignore[assignment]
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("New run", "start a pipeline from a template or a spec file", app.new_run),
            ("Runs list", "back to every run", app.go_home),
            ("Playground", "a prompt answered by one or two checkpoints side by side", app.open_playground),
            ("Rank responses", "judge a batch side by side (pick the batch)", app.open_rank),
        ]
        table = _runs_table(self.screen)  # the screen the palette was opened on
        marked = set(table.marked) if table is not None else set()
        if len(marked) >= 2:
            commands.append(("Compare marked runs", f"{len(marked)} runs", lambda: app.compare(sorted(marked))))
        for row in app.known_runs:
            label = f"#{row.id} {printable(row.name)}"
            commands.append((f"Open run {label}", f"{row.status.value}", partial(app.open_run, row.id)))
            commands.append((f"Log of run {label}", "its log, following", partial(app.open_run, row.id, tab="log")))
            commands.append((f"Report of run {label}", "key numbers per stage, win rates, arena",
                             partial(app.open_report, row.id)))
            if row.status.is_active:
                commands.append((f"Cancel run {label}", "asks first", partial(app.cancel_run, row.id, row.name)))
            if row.status.value == "succeeded":
                commands.append((f"Another round of run {label}", "sample its newest policy, rank, reward, PPO, arena",
                                 partial(app.another_round, row.id)))
            if row.status.is_resumable:
                commands.append((f"Resume run {label}", f"{row.status.value}; continue from its last checkpoint",
                                 partial(app.resume_run, row.id)))
        return commands

    async def discover(self) -> Hits:
        for text, help_text, callback in self._commands()[:12]:
            yield DiscoveryHit(Content(text), callback, text=text, help=escape(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, _highlight(matcher, text), callback, text=text, help=escape(help_text))


def _runs_table(screen: Any) -> Any:
    try:
        from .widgets.runs_table import RunsTable

        return screen.query_one(RunsTable)
    except Exception:  # noqa: BLE001  not the runs screen
        return None


def _highlight(matcher: Any, text: str) -> Content:
    """The matcher's highlight without reading `text` as markup (run names are untrusted)."""
    content = Content(text)
    _, offsets = matcher.fuzzy_search.match(matcher.query, text)
    for offset in offsets:
        if not text[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content
