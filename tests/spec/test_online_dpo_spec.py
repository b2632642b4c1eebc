"""The online_dpo stage's spec: two completions per prompt, DPO's objective,
rloo/grpo's scorers and prompts; what its trainer cannot use is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec import parse_spec
from engine.stages import registry
from engine.stages.online_dpo.spec import OnlineDPOSpec


def stage(tmp_path: Path, table: str) -> OnlineDPOSpec:
    spec = parse_spec(f'[stages.sft]\nkind = "sft"\n\n[stages.od]\nkind = "online_dpo"\nfrom = "sft"\n{table}',
                      source="p.toml", base_dir=tmp_path).stages["od"]
    assert isinstance(spec, OnlineDPOSpec)
    return spec


def problems(tmp_path: Path, table: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        stage(tmp_path, table)
    return info.value.problems


def test_registered_with_its_run_module() -> None:
    kind = registry.stage_kind("online_dpo")
    assert kind is not None and kind.spec is OnlineDPOSpec and kind.module == "engine.stages.online_dpo.stage"


def test_a_judge_alone_scores_and_the_demo_prompts_are_its_default(tmp_path) -> None:
    spec = stage(tmp_path, 'judges = "demo"\nprompts_per_step = 6\ngradient_accumulation_steps = 3\n')
    assert spec.judges == ["demo"] and spec.reward_model is None
    assert spec.prompts == "builtin:demo-instructions"  # after an sft stage on the demo
    assert (spec.num_generations, spec.beta, spec.loss_type) == (2, 0.1, "sigmoid")
    assert spec.batch_size == 2  # prompts per micro-batch: trl samples both completions of each


def test_what_its_trainer_cannot_use_is_refused(tmp_path) -> None:
    assert problems(tmp_path, "") == [
        "p.toml: stage 'od': name what scores the completions: `reward_model` and/or `judges`, got a table"]
    [line] = problems(tmp_path, 'judges = "demo"\nnum_generations = 4\n')
    assert "field 'num_generations'" in line and "2" in line
    [line] = problems(tmp_path, 'judges = "demo"\nclip_range = 0.2\n')
    assert "online DPO has no probability ratio to clip" in line
    [line] = problems(tmp_path, 'judges = "demo"\nprompts_per_step = 6\ngradient_accumulation_steps = 4\n')
    assert "field 'gradient_accumulation_steps': 4 does not divide a step's 6 prompts" in line
    [line] = problems(tmp_path, 'judges = "demo"\nloss_type = "hinge"\n')
    assert "field 'loss_type'" in line and "'sigmoid'" in line and "'ipo'" in line
    [line] = problems(tmp_path, 'judges = "demo"\nbeta = 0\n')
    assert "field 'beta'" in line


def test_its_trainer_table_fills_trls_online_dpo_config(tmp_path) -> None:
    spec = stage(tmp_path, 'judges = "demo"\n[stages.od.trainer]\nrepetition_penalty = 1.1\nmax_length = 256\n')
    assert spec.trainer == {"repetition_penalty": 1.1, "max_length": 256}
    [line] = problems(tmp_path, 'judges = "demo"\n[stages.od.trainer]\nepsilon = 0.2\n')
    assert "field 'trainer.epsilon': not a setting of trl's OnlineDPOConfig" in line  # not "set clip_range"
    [line] = problems(tmp_path, 'judges = "demo"\n[stages.od.trainer]\nlogging_steps = 5\n')
    assert "logs every step" in line
