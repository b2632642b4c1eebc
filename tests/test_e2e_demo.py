"""The whole loop end to end: `rlhf demo --headless --quick`, as a user runs it.

No fakes: real pretraining, SFT, sampling, the demo judge ranking, a reward
model, our PPO, TRL's DPO and the arena, through the `rlhf` command. Each stage
must improve what it is for (issue 8's check): the held-out loss falls, SFT
beats its base on the judge's score, the reward model is right more often than
chance on held-out prompts, and the judge prefers PPO's and DPO's answers to
SFT's on held-out prompts more often than not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RLHF = str(Path(sys.executable).with_name("rlhf"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def figure(report: dict, stage: str, key: str) -> dict:
    found = next(s for s in report["stages"] if s["stage"] == stage)
    return next(f for f in found["figures"] if f["key"] == key)


def test_the_quick_demo_improves_at_every_stage(tmp_path: Path) -> None:
    env = {**os.environ, "RLHF_DEVICES": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([RLHF, "-w", str(tmp_path / "ws"), "demo", "--headless", "--quick", "--json"],
                            env=env, capture_output=True, text=True, timeout=1150)
    updates = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    finished = next(u for u in updates if u.get("type") == "RunFinished")
    assert result.returncode == 0 and finished["status"] == "succeeded", result.stdout[-3000:] + result.stderr[-3000:]
    report = next(u for u in updates if u.get("type") == "Report")

    loss = figure(report, "pretrain", "eval/loss")
    assert loss["last"] < loss["first"] - 1.0
    judge = figure(report, "sft", "eval/judge_score")
    assert judge["last"] > judge["first"] + 0.2  # SFT beats the pretrained base
    assert figure(report, "reward", "eval/accuracy")["last"] > 0.6  # above chance on held-out prompts

    rates = {(r["policy"], r["annotators"]): r for r in report["win_rates"]}
    for policy in ("ppo", "dpo"):
        rate = rates[(policy, "judges")]
        assert rate["wins"] + rate["ties"] + rate["losses"] >= 30
        assert rate["rate"] > 0.5, (policy, rate)  # the judge prefers it to SFT
    assert {row["player"] for row in report["leaderboard"]} == {"sft", "ppo", "dpo"}
