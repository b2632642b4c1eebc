"""Key press to screen updated, in a real terminal, with and without load.

    python bench/bench_keypress.py [--presses 120] [--load burn|demo]

Runs `rlhf tui` in a pseudo-terminal (80x24) that answers Textual's query for
synchronized output, so every frame the console paints ends with the
"end of update" sequence. The console shows the run screen of a live run
(the fake stage logging a metric and a log line every 10 ms), and the bench
switches its tabs with the digit keys: each tab has text no other tab shows
(`LATEST` on Metrics, a log line on Log, ...), so the frame answering a key is
known exactly, never confused with a timed refresh. A sample is the time from
writing the key to the end of that frame: what a person sees.

Side by side in one run: idle, then under load. `--load burn` (default)
starts two processes spinning on a core each, next to the live run; `--load
demo` starts the built-in demo pretraining instead (torch on both cores;
needs a first run of the demo to have its data cached, about a minute).
Prints p50, p95 and max per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import platform
import pty
import random
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYNC_END = b"\x1b[?2026l"
SYNC_QUERY = b"\x1b[?2026$p"
SYNC_SUPPORTED = b"\x1b[?2026;2$y"
#: tab key -> text only that tab shows
TABS = {"2": b"LATEST", "3": b"fake step", "4": b"[stages.work]", "5": b"PATH (in the workspace)",
        "6": b"No samples yet", "1": b"train/loss"}


class Terminal:
    """A pseudo-terminal running `rlhf tui`."""

    def __init__(self, workspace: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        script = Path(sys.executable).with_name("rlhf")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "console.cli"]
        self.process = subprocess.Popen(
            [*command, "-w", str(workspace), "tui"], stdin=slave, stdout=slave, stderr=slave,
            env={**env, "TERM": "xterm-256color"}, cwd=ROOT, start_new_session=True, close_fds=True,
        )
        os.close(slave)
        self.answered = False

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        data = os.read(self.master, 1 << 16)
        if not self.answered and SYNC_QUERY in data:
            os.write(self.master, SYNC_SUPPORTED)  # a terminal that paints frames atomically
            self.answered = True
        return data

    def wait_for(self, marker: bytes, timeout: float = 30) -> None:
        seen = b""
        deadline = time.monotonic() + timeout
        while marker not in seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{marker!r} not shown in {timeout} s; last output {seen[-300:]!r}")
            seen = (seen + self.read(0.05))[-200_000:]

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.read(max(0.0, end - time.monotonic()))

    def press(self, key: str, marker: bytes, timeout: float = 10) -> float:
        """Seconds from writing `key` to the end of the frame that shows `marker`."""
        os.write(self.master, key.encode())
        start = time.perf_counter()
        seen = b""
        while True:
            chunk = self.read(timeout)
            if not chunk:
                raise RuntimeError(f"no frame with {marker!r} within {timeout} s after {key!r}")
            seen += chunk
            at = seen.find(marker)
            if at >= 0 and SYNC_END in seen[at:]:
                return time.perf_counter() - start

    def close(self) -> None:
        try:
            os.write(self.master, b"q")
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        os.close(self.master)


def measure(terminal: Terminal, presses: int, rng: random.Random) -> list[float]:
    keys = list(TABS)
    samples = []
    for i in range(presses):
        terminal.drain(rng.uniform(0.05, 0.25))  # a person's pause between keys; output keeps flowing
        key = keys[i % len(keys)]
        samples.append(terminal.press(key, TABS[key]))
    return samples


def start_load(kind: str, engine, env: dict[str, str]) -> list[subprocess.Popen]:
    if kind == "burn":
        spin = "while True: pass"
        return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    from engine.demo.pipeline import demo_spec

    asyncio.run(engine.submit(demo_spec(), name="load"))
    return []


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"  {label:<40} p50 {statistics.median(samples) * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms   "
            f"max {max(samples) * 1000:6.1f} ms   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=120)
    parser.add_argument("--load", choices=("burn", "demo"), default="burn")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    env = {**os.environ, "RLHF_STAGE_PLUGINS": "tests.engine.fake_stage", "RLHF_DEVICES": "cpu",
           "RLHF_CPU_SLOTS": "4", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    os.environ.update(env)  # the run processes the engine starts inherit it
    from engine import Engine, parse_spec

    rng = random.Random(args.seed)
    load: list[subprocess.Popen] = []
    trained: list[tuple[int, int | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        engine = Engine(workspace)
        spec = parse_spec(textwrap.dedent("""\
            name = "live"
            [stages.work]
            kind = "fake"
            steps = 1000000
            step_seconds = 0.01
            save_every = 1000000
            """), source="bench", base_dir=Path(tmp))
        run = asyncio.run(engine.submit(spec))
        terminal = Terminal(workspace, env)
        try:
            terminal.wait_for(b"live")
            while engine.store.get_run(run.id).status.value != "running":
                terminal.drain(0.2)
            os.write(terminal.master, b"\r")  # open the run (the newest, under the cursor)
            terminal.wait_for(b"Charts")
            terminal.drain(2.0)
            psutil.cpu_percent()
            idle = measure(terminal, args.presses, rng)
            idle_cpu = psutil.cpu_percent()
            load = start_load(args.load, engine, env)
            if args.load == "demo":  # measure while it trains, not while it loads
                while not any(r.name == "load" and any(s.step > 0 for s in engine.store.list_stages(run_id=r.id))
                              for r in engine.store.list_runs()):
                    terminal.drain(0.5)
            terminal.drain(3.0)
            psutil.cpu_percent()
            busy = measure(terminal, args.presses, rng)
            busy_cpu = psutil.cpu_percent()
            trained = [(s.step, s.total) for r in engine.store.list_runs() if r.name == "load"
                       for s in engine.store.list_stages(run_id=r.id)]
        finally:
            terminal.close()
            for process in load:
                process.kill()
            for r in engine.store.list_runs():
                if r.status.is_active:
                    asyncio.run(engine.cancel(r.id, wait=True, timeout=30))
            engine.close()

    print("key press -> frame painted (rlhf tui in an 80x24 pty, run screen of a live run, tab keys)")
    print(f"  {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"load: {'2 processes spinning' if args.load == 'burn' else 'the demo pretraining (torch)'}"
          f" + the live run")
    print(f"  load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"(other work on the machine shows in these figures)")
    print(summary("idle (the live run only)", idle) + f"   CPU {idle_cpu:3.0f}%")
    print(summary("under load", busy) + f"   CPU {busy_cpu:3.0f}%")
    if args.load == "demo":
        print(f"  the demo trained to step {trained[0][0]}/{trained[0][1]} by the end of the measurement")
    p95 = sorted(busy)[min(len(busy) - 1, round(0.95 * (len(busy) - 1)))]
    print(f"  target: p95 <= 100 ms under load -> {'OK' if p95 <= 0.1 else 'MISSED'}")


if __name__ == "__main__":
    main()
