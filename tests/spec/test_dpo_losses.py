"""The dpo kind's `loss_type` takes exactly trl's DPO losses (one, or an array
added together), the settings those losses read are checked beside it, and a
bad value is one line naming the valid ones. No model is built."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
from trl import DPOConfig

from engine.errors import SpecError
from engine.spec import parse_spec
from engine.stages.common import setup as runtime
from engine.stages.dpo import stage as dpo
from engine.stages.dpo.spec import DPO_LOSSES, DPOSpec

CPU = runtime.choose_runtime("cpu", "fp32")


def dpo_table(settings: str) -> str:
    return (f'[stages.dpo]\nkind = "dpo"\nfrom = "org/model"\npreferences = "rank"\n{settings}\n'
            '[stages.rank]\nkind = "rank"\nbatch = "b"\n')


def problems(settings: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(dpo_table(settings), source="t.toml", base_dir=Path.cwd())
    return info.value.problems


def test_the_list_is_the_one_trl_documents() -> None:
    """A trl upgrade that adds or drops a loss fails here, not in a user's run."""
    help_text = next(f for f in fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    listed = help_text.split("Possible values are:")[1].split(". If")[0]
    assert tuple(re.findall(r"`'([a-z_]+)'`", listed)) == DPO_LOSSES


def test_an_unknown_loss_is_one_line_naming_the_valid_ones() -> None:
    [line] = problems('loss_type = "rubust"')
    assert "field 'loss_type'" in line and "'rubust' is not one of trl's DPO losses" in line
    assert "expected one of sigmoid, hinge, ipo, exo_pair, nca_pair, robust," in line and "sigmoid_norm" in line
    [line] = problems('loss_type = ["sigmoid", "bogus"]')
    assert "'bogus' is not one of" in line


@pytest.mark.parametrize(("settings", "expected"), [
    ('loss_type = "exo_pair"', "exo_pair needs label_smoothing above 0"),
    ("label_smoothing = 0.1", "label_smoothing is read only by aot, aot_unpaired, exo_pair, robust; "
                              "loss_type sigmoid would ignore it"),
    ('loss_type = "robust"\nlabel_smoothing = 0.5', "field 'label_smoothing'"),
    ('loss_type = ["sigmoid", "bco_pair"]\nloss_weights = [1.0]', "loss_weights has 1 entries for 2 losses"),
    ('loss_type = ["sigmoid", "sft"]\nsft_weight = 0.5', "sft_weight adds the sft loss"),
    ('loss_type = []', "expected a loss or a non-empty array of losses"),
])
def test_settings_a_loss_cannot_use_are_refused(settings: str, expected: str) -> None:
    [line] = problems(settings)
    assert expected in line, line


def test_the_built_config_carries_the_loss_and_its_settings(tmp_path: Path) -> None:
    spec = DPOSpec(from_="hub:org/m", batches=["b"], loss_type="robust", label_smoothing=0.1, beta=0.2)
    args = dpo.dpo_config(spec, CPU, tmp_path, evaluate=True, precompute=False, checkpointing=False, resuming=False)
    assert (args.loss_type, args.loss_weights, args.label_smoothing, args.beta) == (["robust"], None, 0.1, 0.2)

    mixed = DPOSpec(from_="hub:org/m", batches=["b"], loss_type=["sigmoid", "bco_pair"], loss_weights=[0.8, 0.2],
                    sft_weight=0.5)
    args = dpo.dpo_config(mixed, CPU, tmp_path, evaluate=False, precompute=False, checkpointing=False,
                          resuming=False)
    assert (args.loss_type, args.loss_weights) == (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 0.5])
    assert args.eval_strategy == "no" and not args.eval_on_start

    # A loss's own tuning knob that the spec does not name goes through the [trainer] table.
    stage = parse_spec(dpo_table('loss_type = "discopop"\n[stages.dpo.trainer]\ndiscopop_tau = 0.1'),
                       source="t.toml", base_dir=tmp_path).stages["dpo"]
    assert isinstance(stage, DPOSpec)
    args = dpo.dpo_config(stage, CPU, tmp_path, evaluate=True, precompute=False, checkpointing=False,
                          resuming=False)
    assert (args.loss_type, args.discopop_tau) == (["discopop"], 0.1)
