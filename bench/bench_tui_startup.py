"""Cold start of `rlhf tui`: process start to the first screen, runs listed.

    python bench/bench_tui_startup.py [--repeats 11] [--runs 20]

Starts the real command in a pseudo-terminal (80x24, as a person over SSH
would), and times from the fork to the first output that shows the newest
run's name: the runs screen painted with its runs read from the store. Then
presses `q` and times the exit too. Side by side in the same run, medians of
`--repeats` starts each:

- `python -c pass`: the interpreter alone;
- `python -c "import console.cli"`: what every `rlhf` command imports;
- `rlhf tui`: to the first screen with runs.

The workspace holds `--runs` finished runs of 2,000 metric points each (the
sparklines read them), made fresh for the bench. One start before the timed
ones warms the file cache and writes the .pyc files, as an installed copy has
them. The target (issue 12): the
first screen in at most 0.5 s, median.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: `rlhf tui` to its first screen, median (issue 12: "a console that opens like htop")
TARGET_SECONDS = 0.5
sys.path.insert(0, str(ROOT))

from store import NewStage, RunStatus, open_workspace, utcnow  # noqa: E402


def make_workspace(root: Path, runs: int) -> str:
    workspace = open_workspace(root)
    store = workspace.store
    name = ""
    for i in range(runs):
        name = f"bench-run-{i + 1:03d}"
        run = store.create_run(name=name, spec_text="", spec={"stages": {"pretrain": {"kind": "pretrain"}}},
                               spec_path=None, stages=[NewStage("pretrain", "pretrain", 0, None, {})])
        stage = store.list_stages(run_id=run.id)[0]
        store.add_metrics([
            {"run_id": run.id, "stage_id": stage.id, "key": "train/loss", "step": s, "value": 1 / s,
             "wall_time": 1e9 + s} for s in range(1, 2001)
        ])
        store.update_stage(stage.id, status="succeeded", step=2000, total=2000)
        store.update_run(run.id, status=RunStatus.SUCCEEDED, started_at=utcnow(), finished_at=utcnow())
    workspace.close()
    return name


def rlhf_command() -> list[str]:
    script = Path(sys.executable).with_name("rlhf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "console.cli"]


def time_command(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT)
    return time.perf_counter() - start


def time_tui(workspace: Path, marker: bytes, write_bytecode: bool = False) -> tuple[float, float]:
    """Seconds to the first screen showing `marker`, and from `q` to exit.

    `write_bytecode` lets this start write the .pyc files it compiles even where
    PYTHONDONTWRITEBYTECODE is set (as on our CI machines): without them every
    start compiles our ~30 modules from source again (about 100 ms here), which
    no installed copy does (pip writes them at install, an editable checkout on
    its first start)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "RLHF_WORKSPACE": str(workspace)}
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    process = subprocess.Popen([*rlhf_command(), "tui"], stdin=slave, stdout=slave, stderr=slave, env=env,
                               cwd=ROOT, start_new_session=True, close_fds=True)
    os.close(slave)
    output = b""
    first_screen = None
    try:
        deadline = start + 30
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                output += os.read(master, 1 << 16)
                if marker in output:
                    first_screen = time.perf_counter() - start
                    break
        if first_screen is None:
            raise RuntimeError(f"no first screen in 30 s; output: {output[-500:]!r}")
        os.write(master, b"q")
        quit_at = time.perf_counter()
        while process.poll() is None and time.perf_counter() - quit_at < 10:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    os.read(master, 1 << 16)
                except OSError:
                    break
        process.wait(timeout=10)
        return first_screen, time.perf_counter() - quit_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        os.close(master)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        newest = make_workspace(workspace, args.runs)
        marker = newest.encode()
        time_tui(workspace, marker, write_bytecode=True)  # warm the OS file cache and .pyc files once, not counted

        python, imports, tui, quits = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so drift hits all three alike
            python.append(time_command([sys.executable, "-c", "pass"]))
            imports.append(time_command([sys.executable, "-c", "import console.cli"]))
            first, quit_seconds = time_tui(workspace, marker)
            tui.append(first)
            quits.append(quit_seconds)

    def row(label: str, values: list[float]) -> str:
        return (f"  {label:<42} median {statistics.median(values) * 1000:7.0f} ms   "
                f"min {min(values) * 1000:6.0f}   max {max(values) * 1000:6.0f}")

    print(f"rlhf tui cold start ({args.repeats} starts each, {args.runs + 0} runs in the workspace)")
    print(f"  {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.platform()}")
    print(f"  load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"(other work on the machine shows in these figures)")
    print(row("python -c pass", python))
    print(row("python -c 'import console.cli'", imports))
    print(row("rlhf tui -> first screen with runs", tui))
    print(row("q -> process exited", quits))
    over_bare = statistics.median(tui) - statistics.median(python)
    print(f"  first screen minus bare interpreter: {over_bare * 1000:.0f} ms;"
          f" target: median <= {TARGET_SECONDS * 1000:.0f} ms -> "
          f"{'OK' if statistics.median(tui) <= TARGET_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    main()
