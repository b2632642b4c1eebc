"""`--set STAGE.KEY=VALUE`: overrides applied to a spec's stage tables before it is validated."""

from __future__ import annotations

import tomllib

import pytest

from engine.errors import SpecError
from engine.spec import load_spec
from engine.spec.overrides import load_spec_with_overrides, parse_override, parse_value

TWO_STAGES = """\
name = "tiny"
# a comment the file keeps
[stages.sft]
kind = "sft"
from = "pretrain"
max_steps = 40

[stages.pretrain]
kind = "pretrain"
max_steps = 100
"""


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("50", 50), ("2e-5", 2e-5), ("-3", -3), ("true", True), ("false", False),
        ('"quoted"', "quoted"), ("'literal'", "literal"), ("[1, 2]", [1, 2]), ('["a", "b"]', ["a", "b"]),
        ("{ r = 8 }", {"r": 8}),
        # not TOML: the text as typed
        ("./data/train.jsonl", "./data/train.jsonl"), ("gpt2", "gpt2"), ("org/model", "org/model"),
        ("builtin:llama-4m", "builtin:llama-4m"), ("", ""), ("  spaced  ", "spaced"),
        ("1\nother = 2", "1\nother = 2"),  # two TOML keys are not one value
        ("2024-01-01", "2024-01-01"), ("12:30:00", "12:30:00"),  # no field takes a date: text
    ],
)
def test_values_are_read_as_toml_else_as_text(raw, value):
    assert parse_value(raw) == value


def test_an_override_names_a_stage_and_a_key_path():
    override = parse_override("sft.lora.r=16")
    assert (override.stage, override.key, override.value, override.name) == ("sft", ("lora", "r"), 16, "sft.lora.r")
    assert parse_override(" sft.data = ./a=b.jsonl ").value == "./a=b.jsonl"  # the first `=` splits


@pytest.mark.parametrize("raw", ["sft", "sft=3", "max_steps=3", ".max_steps=3", "sft.=3", "sft..r=3", "=3"])
def test_a_malformed_override_says_what_shape_is_expected(raw):
    with pytest.raises(SpecError) as info:
        parse_override(raw)
    assert info.value.exit_code == 2
    assert "expected STAGE.KEY=VALUE" in str(info.value)


def test_overrides_change_the_validated_spec_and_the_recorded_text(specs):
    path = specs.write(TWO_STAGES)
    spec = load_spec_with_overrides(path, [
        "sft.max_steps=5", "sft.learning_rate=1e-4", "pretrain.max_steps=7", "sft.max_steps=6",  # last one wins
        "sft.lora.r=8",  # a table the file does not have
    ])
    assert spec.stages["sft"].max_steps == 6
    assert spec.stages["sft"].learning_rate == 1e-4
    assert spec.stages["sft"].lora is not None and spec.stages["sft"].lora.r == 8
    assert spec.stages["pretrain"].max_steps == 7
    assert list(spec.stages) == ["pretrain", "sft"]  # still ordered by what each needs
    assert spec.name == "tiny" and spec.source == str(path)
    # The run records the TOML it ran: the file's tables with the overrides, saying where it came from.
    recorded = tomllib.loads(spec.text)
    assert recorded["stages"]["sft"]["max_steps"] == 6
    assert recorded["stages"]["pretrain"]["max_steps"] == 7
    assert spec.text.startswith(f"# {path}, with --set sft.max_steps=5 ")
    assert "--set sft.lora.r=8" in spec.text.splitlines()[0]
    assert load_spec_with_overrides(path, []).text == TWO_STAGES  # no override: the file as it is


def test_relative_paths_in_overrides_start_at_the_spec_folder(specs):
    (specs.root / "corpus.txt").write_text("some text to pretrain on\n")
    spec = load_spec_with_overrides(specs.write(TWO_STAGES), ["pretrain.data=corpus.txt"])
    assert spec.stages["pretrain"].data == f"path:{specs.root / 'corpus.txt'}"


def test_a_bad_value_gets_the_spec_s_own_message_naming_the_override(specs):
    path = specs.write(TWO_STAGES)
    with pytest.raises(SpecError) as info:
        load_spec_with_overrides(path, ["sft.max_steps=many", "pretrain.learning_rate=-1"])
    assert info.value.problems == [
        f"{path}: stage 'sft', field 'max_steps' (--set sft.max_steps): expected an integer, "
        "got the string 'many'",
        f"{path}: stage 'pretrain', field 'learning_rate' (--set pretrain.learning_rate): must be greater than 0, "
        "got -1",
    ]


def test_an_unknown_key_gets_the_spec_s_hint_and_names_the_override(specs):
    path = specs.write(TWO_STAGES)
    with pytest.raises(SpecError) as info:
        load_spec_with_overrides(path, ["sft.max_stepz=5"])
    [line] = info.value.problems
    assert line.startswith(f"{path}: stage 'sft', field 'max_stepz' (--set sft.max_stepz): unknown field")
    assert "'max_steps'" in line


def test_the_file_s_own_problems_are_told_as_without_overrides(specs):
    path = specs.write(TWO_STAGES.replace("max_steps = 100", "max_steps = 0"))
    with pytest.raises(SpecError) as without:
        load_spec(path)
    with pytest.raises(SpecError) as beside:
        load_spec_with_overrides(path, ["sft.max_steps=5"])
    assert beside.value.problems == without.value.problems


def test_an_override_can_fix_what_the_file_gets_wrong(specs):
    path = specs.write(TWO_STAGES.replace("max_steps = 100", "max_steps = 0"))
    assert load_spec_with_overrides(path, ["pretrain.max_steps=3"]).stages["pretrain"].max_steps == 3


def test_an_unknown_stage_is_named_with_the_stages_there_are(specs):
    path = specs.write(TWO_STAGES)
    with pytest.raises(SpecError) as info:
        load_spec_with_overrides(path, ["stf.max_steps=5", "ppo.kl_coef=0.1"])
    assert info.value.problems == [
        f"--set stf.max_steps: {path} has no stage 'stf'; did you mean 'sft'? (stages: sft, pretrain)",
        f"--set ppo.kl_coef: {path} has no stage 'ppo' (stages: sft, pretrain)",
    ]


def test_a_key_under_a_value_that_is_not_a_table(specs):
    path = specs.write(TWO_STAGES)
    with pytest.raises(SpecError) as info:
        load_spec_with_overrides(path, ["sft.max_steps.x=5"])
    assert info.value.problems == [f"--set sft.max_steps.x: sft.max_steps is not a table in {path}, so it has no keys"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[stages.a\n", "invalid TOML"),
        ('name = "x"\n', "no [stages] table"),
        ('[stages.a]\nkind = "pretrain"\nseed = 2024-01-01\n', "date/time"),  # TOML we read but do not write
    ],
)
def test_a_file_the_overrides_cannot_apply_to_is_reported_as_the_loader_does(specs, text, expected):
    path = specs.write(text)
    with pytest.raises(SpecError) as without:
        load_spec(path)
    with pytest.raises(SpecError) as beside:
        load_spec_with_overrides(path, ["a.max_steps=5"])
    assert beside.value.problems == without.value.problems
    assert expected in str(beside.value)


def test_a_missing_file_is_reported_as_the_loader_does(specs):
    with pytest.raises(SpecError) as info:
        load_spec_with_overrides(specs.root / "nope.toml", ["a.max_steps=5"])
    assert info.value.problems == [f"{specs.root / 'nope.toml'}: no such file"]
