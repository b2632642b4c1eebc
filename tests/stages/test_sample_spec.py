"""The `sample` stage's spec: its fields, its bounds, and references given as an array."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec import parse_spec
from engine.stages.sample.spec import SampleSpec


def problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="s.toml", base_dir=tmp_path)
    return caught.value.problems


def stage(body: str) -> str:
    return f'[stages.s]\nkind = "sample"\n{body}\n'


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    return folder


def test_one_model_and_a_prompt_file(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    spec = parse_spec(stage('from = "./model"\nprompts = "prompts.jsonl"'), source="s.toml", base_dir=tmp_path)
    s = spec.stages["s"]
    assert isinstance(s, SampleSpec)
    assert s.models == [f"path:{model_dir}"]
    assert s.prompts == f"path:{tmp_path / 'prompts.jsonl'}"
    assert s.prompt_texts is None
    assert (s.responses_per_prompt, s.temperature, s.top_p, s.max_new_tokens) == (4, 0.8, 0.95, 64)


def test_prompts_are_required_unless_the_model_is_a_demo_model(tmp_path: Path, model_dir: Path) -> None:
    # A user's model is never asked the demo task's prompts by default.
    assert problems(stage('from = "./model"'), tmp_path) == [
        "s.toml: stage 's', field 'prompts': required for a model of your own: the prompts to use (a file, "
        "a datasets folder or a hub id); only a built-in demo model defaults to the demo's (builtin:demo-prompts)"]
    # A built-in preset, directly or through the stages it comes from, is the demo's.
    text = '[stages.pre]\nkind = "pretrain"\nfrom = "builtin:llama-1m"\n' + stage('from = "pre"')
    assert parse_spec(text, source="s.toml", base_dir=tmp_path).stages["s"].prompts == "builtin:demo-prompts"


def test_several_models_are_canonical_references_and_dependencies(tmp_path: Path, model_dir: Path) -> None:
    text = (
        '[stages.pre]\nkind = "pretrain"\nfrom = "builtin:llama-1m"\n'
        + stage('from = ["pre", "./model", "builtin:llama-1m", "org/name"]\nprompts = ["a", "b"]')
    )
    spec = parse_spec(text, source="s.toml", base_dir=tmp_path)
    s = spec.stages["s"]
    assert s.models == ["stage:pre", f"path:{model_dir}", "builtin:llama-1m", "hub:org/name"]
    assert s.prompt_texts == ["a", "b"]
    assert spec.dependencies["s"] == ("pre",)
    # Stored and read back in a worker, it validates unchanged.
    assert SampleSpec.model_validate(spec.to_dict()["s"]) == s


def test_array_items_that_do_not_resolve_are_each_named(tmp_path: Path) -> None:
    lines = problems(stage('from = ["./missing", "nostage", "builtin:bpe-4k"]\nprompts = ["x"]'), tmp_path)
    assert lines[0].startswith("s.toml: stage 's', field 'from': item 1: no such file or folder:")
    assert lines[1] == "s.toml: stage 's', field 'from': item 2: unknown stage 'nostage' (stages in this file: s)"
    assert lines[2].startswith("s.toml: stage 's', field 'from': item 3: builtin:bpe-4k is a tokenizer")
    assert len(lines) == 3


def test_a_cycle_through_an_array_is_rejected(tmp_path: Path) -> None:
    text = stage('from = ["b"]\nprompts = ["x"]') + '[stages.b]\nkind = "pretrain"\nfrom = "s"\n'
    (line,) = problems(text, tmp_path)
    assert "stages s -> b -> s form a cycle" in line and "field 'from[0]'" in line


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", ["field 'from': missing; this field is required"]),
        ('from = "builtin:llama-1m"\nprompts = ["x"]\nresponses_per_prompt = 0',
         ["field 'responses_per_prompt': must be at least 1, got 0"]),
        ('from = "builtin:llama-1m"\nprompts = ["x"]\nresponses_per_prompt = 10',
         ["field 'responses_per_prompt': must be at most 9, got 10"]),
        ('from = "builtin:llama-1m"\nprompts = ["x"]\ntemperature = 0',
         ["field 'temperature': 0 (greedy) gives the same response every time, so 4 responses per prompt "
          "from 1 model would repeat"]),
        ('from = "builtin:llama-1m"\nprompts = ["x"]\ntop_p = 0', ["field 'top_p': must be greater than 0, got 0"]),
        ('from = 3\nprompts = {a = 1}',
         ["field 'from': expected a model (a stage name, builtin:NAME, a path or a hub id) or an array of models, "
          "got the integer 3",
          "field 'prompts': expected a data set (builtin:NAME, a path or a hub id) or an array of prompts, "
          "got a table"]),
        ('from = []\nprompts = ["a", " "]',
         ["field 'from': expected at least one of the models", "field 'prompts': item 2 of the array is empty"]),
        ('from = ["builtin:llama-1m", "llama-1m"]\nprompts = ["x"]',
         ["field 'from': names the model 'builtin:llama-1m' twice"]),
        ('from = "builtin:llama-1m"\nprompts = ["x"]\nprocesses = 2', ["field 'processes': "]),
    ],
    ids=["missing", "k-0", "k-10", "greedy", "top-p", "types", "empty", "twice", "processes"],
)
def test_rejections(tmp_path: Path, body: str, message: list[str]) -> None:
    lines = problems(stage(body), tmp_path)
    assert len(lines) == len(message), lines
    for line, expected in zip(lines, message):
        assert line.startswith("s.toml: stage 's', ") and expected in line, line


def test_greedy_is_fine_when_each_model_answers_once(tmp_path: Path) -> None:
    text = stage('from = ["builtin:llama-1m", "builtin:llama-4m"]\nprompts = ["x"]\n'
                 'responses_per_prompt = 2\ntemperature = 0')
    assert parse_spec(text, source="s.toml", base_dir=tmp_path).stages["s"].temperature == 0
