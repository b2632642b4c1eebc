"""The whole loop end to end: the demo pipeline, shortened, through `rlhf run`, as a user runs it.

No fakes: real pretraining, SFT, sampling, the demo judge ranking, a reward
model, our PPO, TRL's DPO and the arena. The demo's own spec (engine/demo/pipeline.py)
with fewer steps in every stage, so it fits the suite's time.

What it asserts is what each stage should do, as issue 8 asks: pretraining
lowers the held-out loss, SFT beats its base on the judge's score, the reward
model is above chance on prompts it never saw, PPO raises the reward model's
score on held-out prompts, DPO widens the held-out log-prob margin, and in the
arena the judge prefers PPO's and DPO's answers to SFT's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.demo.pipeline import DEMO_SPEC, _with_settings

RLHF = str(Path(sys.executable).with_name("rlhf"))

# The limits guard against a hang, not a slow machine: about 4 minutes on 2 quiet cores, but past
# 14 on 2 cores shared with other work (measured: it was still in PPO when 840 s ran out).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

#: about four minutes on 2 quiet cores: enough SFT for the model to answer,
#: enough ranked prompts for the reward model and DPO to learn the judge's taste
SHORT = {
    "pretrain": {"max_steps": 100, "eval_every": 50, "save_every": 100},
    # 450 steps, not 600 (the suite's longest test): measured at these settings, one thread as in CI, the
    # judge's score 0.71 (from 0.0), the reward model 0.68 on held-out pairs, PPO beats SFT 37/14/9 and
    # DPO 41/14/5 in the arena. At 300 DPO's arena rate fell to 0.59, under what is asserted below.
    "sft": {"max_steps": 450, "sample_every": 225, "eval_every": 225},
    "sample": {"max_prompts": 256},
    # 150 steps, not 100: with transformers 5.25 (a fresh install) the model had 0.58 and 0.60 on its 96
    # held-out pairs at step 100, at the edge of the 0.6 asserted; 0.69, 0.68, 0.67, 0.67 at 125-200.
    # The whole test at these settings, one thread (5.25): SFT's judge score 0.52 (from 0.0), the reward
    # model 0.66, PPO beats SFT 40/13/7 and DPO 37/16/7 in the arena; 543 s on 2 cores.
    "reward": {"max_steps": 150, "eval_every": 50},
    "ppo": {"updates": 16, "learning_rate": 2e-5, "sample_every": 8},
    # 60 steps, not 100: at 100 DPO took a sixth of the test, and at step 50 it already had the held-out
    # margin at 4.2 (from 1.8; 4.8 at 100) and the judge's full score on the eval prompts.
    "dpo": {"max_steps": 60, "eval_every": 30, "sample_every": 30},
    "arena_answers": {"max_prompts": 60},
}
ARENA_PROMPTS = 60


def figure(report: dict, stage: str, key: str) -> dict:
    found = next(s for s in report["stages"] if s["stage"] == stage)
    return next(f for f in found["figures"] if f["key"] == key)


def test_the_demo_pipeline_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    spec = tmp_path / "demo.toml"
    spec.write_text(_with_settings(DEMO_SPEC, SHORT, name="demo-short"))
    env = {**os.environ, "RLHF_DEVICES": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    workspace = str(tmp_path / "ws")
    try:
        result = subprocess.run([RLHF, "-w", workspace, "run", str(spec), "--json"], env=env, capture_output=True,
                                text=True, timeout=1740)
    finally:  # the run is detached: never leave it training after the test
        subprocess.run([RLHF, "-w", workspace, "cancel", "1"], env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(subprocess.run([RLHF, "-w", workspace, "report", "1", "--json"], env=env,
                                       capture_output=True, text=True, timeout=60).stdout)

    assert all(s["status"] == "succeeded" for s in report["stages"])
    loss = figure(report, "pretrain", "eval/loss")
    assert loss["last"] < loss["first"] - 1.0
    judge = figure(report, "sft", "eval/judge_score")
    assert judge["last"] > judge["first"] + 0.15  # SFT beats the pretrained base
    assert figure(report, "reward", "eval/accuracy")["last"] > 0.6  # above chance on prompts it never saw
    rm_score = figure(report, "ppo", "eval/rm_score")
    assert rm_score["last"] > rm_score["first"]  # PPO raised the reward model's score on held-out prompts
    assert figure(report, "ppo", "ppo/kl")["last"] > 0  # and drifted from SFT to do it: KL is reported
    margin = figure(report, "dpo", "eval/logp_margin")
    assert margin["last"] > margin["first"]  # DPO widened the held-out chosen-minus-rejected margin

    # The arena: the judge compares answers to held-out prompts blind. PPO and
    # DPO beat SFT (measured at these settings: PPO 73%, DPO 80% of 60, ties counting half).
    rates = {(r["policy"], r["annotators"]): r for r in report["win_rates"]}
    for policy in ("ppo", "dpo"):
        rate = rates[(policy, "judges")]
        assert rate["wins"] + rate["ties"] + rate["losses"] == ARENA_PROMPTS  # one comparison per prompt
        assert rate["rate"] >= 0.6 and rate["wins"] > 2 * rate["losses"], rate
    assert {row["player"] for row in report["leaderboard"]} == {"sft", "ppo", "dpo"}
    assert report["leaderboard"][-1]["player"] == "sft"
