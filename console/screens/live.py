"""`LiveScreen`: a screen that refreshes itself from the store on a timer.

A refresh runs as a worker, never on the event loop (the engine's reads are
`asyncio.to_thread`), at most one at a time: a tick that finds the last
refresh still running is skipped, so a slow disk never queues up work. The
timer pauses while another screen is on top. Errors become notifications
(once per distinct message), never a crash. Tests wait for
`next_refresh()` instead of sleeping.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from textual.screen import Screen
from textual.timer import Timer

if TYPE_CHECKING:
    from ..shell import ConsoleShell

#: while nothing on a screen is running, it refreshes every this many ticks
QUIET_EVERY = 5


class LiveScreen(Screen[Any]):
    #: wait for the first layout before the first read (charts size their reads by their width)
    READ_AFTER_LAYOUT = True

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.refreshes = 0
        self._busy = False
        self._again = False
        self._ready = False  # mounted: its widgets exist
        self._ticks = 0
        self._timer: Timer | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._last_error: str | None = None

    @property
    def rlhf(self) -> ConsoleShell:
        """The app, as the narrow protocol screens may use (console/shell.py)."""
        return self.app  # type: ignore[return-value]

    async def refresh_data(self) -> None:
        """Read what is new and show it. Runs in a worker."""
        raise NotImplementedError

    # --- scheduling ---------------------------------------------------------------

    def on_mount(self) -> None:
        if self.READ_AFTER_LAYOUT:
            self.call_after_refresh(self._start)
        else:
            self._start()

    def _start(self) -> None:
        self._ready = True
        self._timer = self.set_interval(self.rlhf.poll_seconds, self._tick)
        self.request_refresh()

    def is_quiet(self) -> bool:
        """Nothing here is running: refresh less often (a resume from the CLI still shows)."""
        return False

    def _tick(self) -> None:
        self._ticks += 1
        if not self.is_quiet() or self._ticks % QUIET_EVERY == 0:
            self.request_refresh()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()
            self.request_refresh()

    def request_refresh(self) -> None:
        """Refresh now, or right after the refresh in flight (or once mounted)."""
        if not self._ready:
            return  # on_mount asks for the first refresh; waiters are served by it
        if self._busy:
            self._again = True
            return
        self._busy = True
        self.run_worker(self._refresh(), group="refresh", exit_on_error=False)

    async def _refresh(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await self.refresh_data()
                    self._last_error = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001  shown, never fatal; engine and store errors included
                    message = self.rlhf.describe_error(exc)
                    if message != self._last_error:
                        self._last_error = message
                        self.rlhf.show_error(exc)
                if not self._again:
                    break
        finally:
            self._busy = False
            self.refreshes += 1
            if self.refreshes == 1:
                self.call_after_refresh(self.rlhf.first_screen_loaded)
            else:
                self.call_after_refresh(self.rlhf.collect_garbage)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def next_refresh(self, *, now: bool = True) -> None:
        """Wait until a refresh that starts after this call has finished: one
        started at once, or (`now=False`) the timer's next one."""
        waiter = asyncio.get_running_loop().create_future()
        if now and self._busy:
            # The refresh in flight may have read before whatever the caller is waiting for.
            self._again = True
        elif now:
            self.request_refresh()
        self._waiters.append(waiter)
        await waiter
