"""Wall time of the headless demo (issue 8's budget: at most 10 minutes on 2 CPU cores).

    .venv/bin/python bench/bench_demo.py [--quick] [--keep DIR]

Runs `rlhf demo --headless --json` in a fresh workspace, exactly as a user
would, and prints the wall time, each stage's time (from the store), and the
report's numbers. One run: the demo is long, and the figure that matters is
whether it fits the budget. Quiet the machine first (no other training or
test runs): every stage is CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the shortened demo (rlhf demo --quick)")
    parser.add_argument("--keep", type=Path, help="workspace folder to keep (default: a temporary one)")
    args = parser.parse_args()
    workspace = args.keep or Path(tempfile.mkdtemp(prefix="bench-demo-")) / "ws"
    rlhf = str(Path(sys.executable).with_name("rlhf"))
    command = [rlhf, "-w", str(workspace), "demo", "--headless", "--json", *(["--quick"] if args.quick else [])]

    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - started
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    finished = next((u for u in lines if u.get("type") == "RunFinished"), {})
    report = next((u for u in lines if u.get("type") == "Report"), None)

    from store import open_workspace

    ws = open_workspace(workspace, create=False)
    print(f"demo{' --quick' if args.quick else ''}: {finished.get('status')} in {wall:.0f} s "
          f"(budget {BUDGET_SECONDS} s: ratio {wall / BUDGET_SECONDS:.2f}); workspace {workspace}")
    for stage in ws.store.list_stages(run_id=1):
        if stage.started_at and stage.finished_at:
            print(f"  {stage.name:<14} {stage.kind:<8} {(stage.finished_at - stage.started_at).total_seconds():6.0f} s")
    ws.close()
    if report:
        for stage in report["stages"]:
            for figure in stage["figures"]:
                before = "" if figure["first"] is None else f"{figure['first']:.4g} -> "
                print(f"  {stage['stage']:<14} {figure['label']:<28} {before}{figure['last']:.4g}")
        for rate in report["win_rates"]:
            shown = "-" if rate["rate"] is None else f"{rate['rate']:.0%}"
            print(f"  win rate {rate['policy']} vs {rate['baseline']} by {rate['annotators']}: {shown} "
                  f"({rate['wins']}/{rate['ties']}/{rate['losses']})")
        for row in report["leaderboard"]:
            print(f"  arena #{row['rank']} {row['player']:<6} {row['rating']:.0f} "
                  f"[{row['ci_low']:.0f}, {row['ci_high']:.0f}] over {row['games']} games")
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
