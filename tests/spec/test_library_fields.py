"""engine/spec/library_fields.py is what tools/library_fields.py writes from the installed
libraries: regenerated here and compared, so an upgrade cannot leave it stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from engine.spec.library_fields import CONFIGS, VERSIONS

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # tools/ is scripts, not a package
    spec = importlib.util.spec_from_file_location("library_fields_tool", ROOT / "tools" / "library_fields.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # imports torch, transformers, trl, peft and accelerate: ~10-25 s in a fresh process
def test_the_checked_in_table_is_what_the_installed_libraries_give() -> None:
    generated = _generator().render()
    checked_in = (ROOT / "engine" / "spec" / "library_fields.py").read_text(encoding="utf-8")
    assert checked_in == generated, (
        f"engine/spec/library_fields.py is stale (written for {VERSIONS}): run .venv/bin/python tools/library_fields.py"
    )


def test_the_table_knows_the_settings_people_pass_through() -> None:
    # Spot checks of what the generator reads: names, TOML types and closed sets of strings.
    assert CONFIGS["TrainingArguments"]["torch_compile"] == (("bool",), ())
    assert CONFIGS["TrainingArguments"]["adam_beta1"][0] == ("float", "int")
    types, choices = CONFIGS["TrainingArguments"]["optim"]
    assert types == ("str",) and "adamw_torch_fused" in choices and "adafactor" in choices
    assert "neftune_noise_alpha" in CONFIGS["SFTConfig"] and "packing" in CONFIGS["SFTConfig"]
    assert "center_rewards_coefficient" in CONFIGS["RewardConfig"]
    assert "use_dora" in CONFIGS["LoraConfig"] and "use_rslora" in CONFIGS["LoraConfig"]
    assert {"betas", "eps", "fused"} <= set(CONFIGS["AdamW"])
    assert "dynamo_backend" in CONFIGS["Accelerator"]
    # SFTConfig is a TrainingArguments: it has all of its fields.
    assert set(CONFIGS["TrainingArguments"]) <= set(CONFIGS["SFTConfig"])
