"""`SystemPanel`: CPU and memory use, and per GPU its utilisation and memory.

It samples the app's `SystemSampler` every few seconds off the event loop
(nvidia-smi is a process start); tests give the app a fake with fixed numbers.
"""

from __future__ import annotations

import asyncio

from rich.text import Text

from ..literal import printable
from ..sysinfo import SystemSampler, SystemSnapshot, human_bytes
from .cells import bar
from .text_panel import TextPanel

SAMPLE_SECONDS = 2.0


def _gauge(label: str, fraction: float | None, detail: str, width: int) -> Text:
    text = Text(f"{label} ", style="bold")
    text.append("▕")
    style = "red" if fraction and fraction > 0.9 else "yellow" if fraction and fraction > 0.7 else "green"
    text.append(bar(fraction, width), style=style)
    text.append("▏")
    text.append(f" {detail}")
    return text


def render_snapshot(snapshot: SystemSnapshot, width: int) -> Text:
    gauge = 10 if width < 100 else 20
    cpu_text = f"{snapshot.cpu_percent:3.0f}% of {snapshot.cpu_count} cores"
    cpu = _gauge("CPU", snapshot.cpu_percent / 100, cpu_text, gauge)
    memory = snapshot.memory_used / snapshot.memory_total if snapshot.memory_total else None
    mem = _gauge("MEM", memory, f"{human_bytes(snapshot.memory_used)} / {human_bytes(snapshot.memory_total)}", gauge)
    text = Text.assemble(cpu, "   ", mem, no_wrap=True, overflow="ellipsis")
    if not snapshot.gpus:
        why = snapshot.gpu_error or "none found (no NVML, no nvidia-smi)"
        text.append("\n")
        text.append("GPU ", style="bold")
        text.append(printable(why), style="dim")
    for gpu in snapshot.gpus:
        used = gpu.memory_used / gpu.memory_total if gpu.memory_total else None
        util = None if gpu.utilization is None else gpu.utilization / 100
        util_text = "n/a" if gpu.utilization is None else f"{gpu.utilization:3.0f}%"
        text.append("\n")
        text.append_text(_gauge(f"GPU{gpu.index}", util, util_text, gauge))
        text.append("   ")
        memory_text = f"{human_bytes(gpu.memory_used)} / {human_bytes(gpu.memory_total)}"
        text.append_text(_gauge("mem", used, memory_text, gauge))
        text.append(f"  {printable(gpu.name)}", style="dim")
    return text


class SystemPanel(TextPanel):
    DEFAULT_CSS = """
    SystemPanel {
        height: auto;
        max-height: 6;
        padding: 0 1;
        border-top: solid $panel-lighten-2;
    }
    """

    def __init__(self, sampler: SystemSampler, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sampler = sampler
        self.snapshot: SystemSnapshot | None = None
        self._sampling = False

    def on_mount(self) -> None:
        self.border_title = "system"
        self.call_after_refresh(self.sample)
        self.set_interval(SAMPLE_SECONDS, self.sample)

    def sample(self) -> None:
        if self._sampling or not self.display or not self.screen.is_current:
            return
        self._sampling = True
        self.run_worker(self._sample(), group="sysinfo", exit_on_error=False)

    async def _sample(self) -> None:
        try:
            snapshot = await asyncio.to_thread(self.sampler.sample)
        except Exception as exc:  # noqa: BLE001  a sensor must never take the console down
            self.snapshot = None
            self.set_text(Text(printable(f"system info unavailable: {exc}"), style="dim"))
            return
        finally:
            self._sampling = False
        if snapshot != self.snapshot:
            lines_changed = self.snapshot is None or len(snapshot.gpus) != len(self.snapshot.gpus)
            self.snapshot = snapshot
            self.refresh(layout=lines_changed)

    def render(self) -> Text:
        # Drawn at paint time: the gauges fit the width the panel has now.
        if self.snapshot is None:
            return super().render()
        return render_snapshot(self.snapshot, self.size.width)
