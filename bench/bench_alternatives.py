"""The alternatives to PPO side by side on the demo: an arena leaderboard (issue 17, within 15 minutes on 2 cores).

    .venv/bin/python bench/bench_alternatives.py [--keep DIR]

One pipeline, run with `rlhf run` exactly as a user would: the quick demo
(pretrain, SFT, 4 answers per prompt ranked by the demo judge, reward model,
PPO, DPO), plus, from the same SFT model and the same answers,

- rejection sampling: SFT answers 512 training prompts 4 times, the demo judge
  keeps the best of each (none from a prompt whose best scores below 0.5),
  then SFT from the SFT model on them (about 3 epochs);
- KTO on the same rankings (their best answers good, worst bad, both-bad both bad);
- ORPO and SimPO (trl's CPO trainer, loss "simpo", no NLL term) on the same pairs;

then every policy answers the same held-out demo prompts and the judge
compares them blind, in pairs. Prints the leaderboard (Bradley-Terry on the
Elo scale, SFT's rating not anchored) and each policy's win rate against SFT.
It measures quality, not speed: it may run beside other work.
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
from typing import Any

from engine.demo.pipeline import demo_document
from engine.spec.toml_render import render_toml

BUDGET_SECONDS = 900
#: the policies the arena compares, by stage name
POLICIES = ["sft", "ppo", "dpo", "rs_sft", "kto", "orpo", "simpo"]


def alternatives_document() -> dict[str, Any]:
    """The quick demo with the alternatives added, all answering in one arena."""
    document = demo_document(quick=True)
    document["name"] = "alternatives"
    stages = document["stages"]
    preference = {"from": "sft", "preferences": "rank", "max_steps": 60, "batch_size": 16, "eval_every": 30,
                  "eval_prompts": "builtin:demo-prompts", "eval_judge": "demo", "sample_every": 30}
    added = {
        # Its own answers to more prompts than the rankings cover: SFT on the best of 128 prompts' answers
        # (81 kept) for 60 steps of 32 was 24 epochs, and its held-out loss rose (0.44 -> 0.66).
        "rs_sample": {"kind": "sample", "from": "sft", "prompts": "builtin:demo-instructions", "max_prompts": 512,
                      "responses_per_prompt": 4, "temperature": 1.0, "max_new_tokens": 24},
        "rejection": {"kind": "rejection", "samples": "rs_sample", "judge": "demo", "threshold": 0.5},
        "rs_sft": {"kind": "sft", "from": "sft", "data": "rejection", "max_steps": 30, "batch_size": 32,
                   "learning_rate": 1e-4, "eval_prompts": "builtin:demo-prompts", "eval_judge": "demo",
                   "sample_every": 15},
        "kto": {"kind": "kto", **preference, "learning_rate": 5e-5},
        "orpo": {"kind": "orpo", **preference, "learning_rate": 5e-5},
        "simpo": {"kind": "cpo", **preference, "loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0,
                  "learning_rate": 5e-5},
    }
    arena = {name: stages.pop(name) for name in ("arena_answers", "arena")}
    stages.update(added)
    arena["arena_answers"]["from"] = POLICIES
    arena["arena_answers"]["responses_per_prompt"] = len(POLICIES)
    stages.update(arena)
    return document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="workspace folder to keep (default: a temporary one)")
    args = parser.parse_args()
    workspace = args.keep or Path(tempfile.mkdtemp(prefix="bench-alternatives-")) / "ws"
    spec_file = Path(tempfile.mkdtemp(prefix="bench-alternatives-spec-")) / "alternatives.toml"
    spec_file.write_text(render_toml(alternatives_document()), encoding="utf-8")
    rlhf = str(Path(sys.executable).with_name("rlhf"))
    env = {**os.environ, "COLUMNS": "120"}

    started = time.perf_counter()
    result = subprocess.run([rlhf, "-w", str(workspace), "run", str(spec_file), "--json"],
                            capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    report = subprocess.run([rlhf, "-w", str(workspace), "report", "alternatives", "--json"],
                            capture_output=True, text=True, env=env)
    print(f"alternatives: exit {result.returncode} in {wall:.0f} s (budget {BUDGET_SECONDS} s); workspace {workspace}")
    if report.returncode != 0 or not report.stdout.strip():
        print(result.stderr[-3000:], report.stderr[-3000:], file=sys.stderr)
        return 1
    data = json.loads(report.stdout.strip().splitlines()[-1])
    print("stages:")
    for stage in data["stages"]:
        for figure in stage["figures"]:
            before = "" if figure["first"] is None else f"{figure['first']:.4g} -> "
            print(f"  {stage['stage']:<10} {stage['kind']:<9} {figure['label']:<28} {before}{figure['last']:.4g}")
    print("arena leaderboard (the demo judge, blind, in pairs):")
    print(f"  {'rank':<5}{'policy':<8}{'rating':>7}  {'95% interval':<14}{'games':>6}")
    for row in data["leaderboard"]:
        print(f"  {row['rank']:<5}{row['player']:<8}{row['rating']:>7.0f}  "
              f"[{row['ci_low']:.0f}, {row['ci_high']:.0f}]{'':<3}{row['games']:>6}")
    for rate in data["win_rates"]:
        shown = "-" if rate["rate"] is None else f"{rate['rate']:.0%}"
        print(f"  {rate['policy']:<8} vs {rate['baseline']}: {shown} (won/tied/lost {rate['wins']}/{rate['ties']}/"
              f"{rate['losses']}, {rate['annotators']})")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
