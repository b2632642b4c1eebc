"""engine/spec/library_fields.py is what tools/library_fields.py writes from the installed
libraries: regenerated here and compared, so an upgrade cannot leave it stale. Against a newer
release than it was written for (what a fresh install resolves), it must still be sound."""

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
    generator = _generator()
    installed = {name: generator.version(name) for name in generator.LIBRARIES}
    generated = generator.configs()
    if installed == VERSIONS:
        # The libraries it was written from: the file is exactly what the tool writes today.
        checked_in = (ROOT / "engine" / "spec" / "library_fields.py").read_text(encoding="utf-8")
        assert checked_in == generator.render(), (
            "engine/spec/library_fields.py is stale: run .venv/bin/python tools/library_fields.py")
        return
    # A newer release than the table was written for (a fresh install resolves the newest one the
    # pins allow): the table must still be sound, every setting it lets through taken by the installed
    # config with the types and choices it allows. Settings a release adds are not passable until the
    # table is written again, which is no error; one it removes or narrows is.
    unsound = [f"{config}.{name}" for config, fields in CONFIGS.items() for name, entry in fields.items()
               if not _still_taken(entry, generated.get(config, {}).get(name))]
    assert not unsound, (
        f"the installed libraries ({installed}) no longer take these settings the table (written for {VERSIONS}) "
        f"lets through: {unsound}; run .venv/bin/python tools/library_fields.py"
    )


def _still_taken(listed: tuple[tuple[str, ...], tuple[str, ...]],
                 installed: tuple[tuple[str, ...], tuple[str, ...]] | None) -> bool:
    """Whether every value the table lets through for one setting (`listed`: types, choices) is
    one the installed config takes (`installed`, None where it has no such setting)."""
    if installed is None:
        return False
    (types, choices), (types_now, choices_now) = listed, installed
    if "any" not in types_now and not set(types) <= set(types_now):
        return False
    return not choices_now or (bool(choices) and set(choices) <= set(choices_now))


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
