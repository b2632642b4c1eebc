"""Valid specs: execution order, canonical references, defaults and round trips."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from engine.spec import PipelineSpec, PretrainSpec, load_spec, parse_spec, stage_spec_from_dict


def test_minimal_spec_gets_defaults_and_the_file_stem_as_name(specs):
    text = '[stages.pretrain]\nkind = "pretrain"\n'
    spec = specs.load(text, name="tiny-run.toml")
    assert isinstance(spec, PipelineSpec)
    assert spec.name == "tiny-run"
    assert spec.description is None
    assert spec.text == text
    assert spec.source == str(specs.root / "tiny-run.toml")
    assert spec.base_dir == specs.root
    assert list(spec.stages) == ["pretrain"]
    stage = spec.stages["pretrain"]
    assert isinstance(stage, PretrainSpec)
    assert stage == PretrainSpec()
    assert stage.from_ == "builtin:llama-4m"
    assert stage.data == "builtin:stdlib-docs"
    assert stage.tokenizer is None
    assert spec.parents == {"pretrain": None}
    assert spec.dependencies == {"pretrain": ()}


def test_name_and_description(specs):
    spec = specs.load('name = "tiny"\ndescription = "a test"\n[stages.a]\nkind = "pretrain"\n')
    assert (spec.name, spec.description) == ("tiny", "a test")


@pytest.mark.parametrize(
    ("file_name", "run_name"),
    [("my pipeline.toml", "my-pipeline"), ("2024.toml", "run-2024"), ("a.b.toml", "a.b")],
)
def test_default_name_is_a_valid_run_name(specs, file_name, run_name):
    assert specs.load('[stages.a]\nkind = "pretrain"\n', name=file_name).name == run_name


def test_multi_stage_spec_in_topological_order_with_canonical_refs(specs):
    corpus = specs.root / "data" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text("hello\n")
    spec = specs.load(
        """
        name = "multi"
        [stages.finetune]
        kind = "pretrain"
        from = "more"
        tokenizer = "pretrain"
        data = "data/corpus.txt"
        max_steps = 10
        [stages.more]
        kind = "pretrain"
        from = "pretrain"
        data = "./data/corpus.txt"
        [stages.pretrain]
        kind = "pretrain"
        from = "builtin:llama-1m"
        tokenizer = "bpe-4k"
        data = "builtin:stdlib-docs"
        [stages.side]
        kind = "pretrain"
        from = "hf:org/model"
        tokenizer = "org/tok.v2"
        data = "org/corpus"
        """
    )
    # dependencies first; `side` needs nothing and stays after its file neighbours
    assert list(spec.stages) == ["pretrain", "more", "finetune", "side"]
    assert spec.parents == {"pretrain": None, "more": "pretrain", "finetune": "more", "side": None}
    assert spec.dependencies == {
        "pretrain": (),
        "more": ("pretrain",),
        "finetune": ("pretrain", "more"),
        "side": (),
    }
    pre, more, fine, side = spec.stages.values()
    assert (pre.from_, pre.tokenizer, pre.data) == (
        "builtin:llama-1m", "builtin:bpe-4k", "builtin:stdlib-docs",
    )
    assert (more.from_, more.data) == ("stage:pretrain", f"path:{corpus}")
    assert (fine.from_, fine.tokenizer, fine.data, fine.max_steps) == (
        "stage:more", "stage:pretrain", f"path:{corpus}", 10,
    )
    assert (side.from_, side.tokenizer) == ("hub:org/model", "hub:org/tok.v2")


def test_independent_stages_keep_file_order(specs):
    spec = specs.load(
        """
        [stages.c]
        kind = "pretrain"
        [stages.a]
        kind = "pretrain"
        from = "c"
        [stages.b]
        kind = "pretrain"
        """
    )
    assert list(spec.stages) == ["c", "a", "b"]


def test_a_stage_moves_only_as_far_as_its_dependencies_need(specs):
    spec = specs.load(
        """
        [stages.x]
        kind = "pretrain"
        from = "z"
        [stages.y]
        kind = "pretrain"
        [stages.z]
        kind = "pretrain"
        """
    )
    assert list(spec.stages) == ["y", "z", "x"]


def test_relative_paths_resolve_from_the_spec_folder_not_the_cwd(specs, tmp_path, monkeypatch):
    (specs.root / "specs").mkdir()
    (specs.root / "specs" / "corpus.jsonl").write_text('{"text": "hi"}\n')
    (specs.root / "models" / "tiny").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = specs.load(
        """
        [stages.a]
        kind = "pretrain"
        data = "corpus.jsonl"
        from = "../models/tiny"
        """,
        name="specs/p.toml",
    )
    stage = spec.stages["a"]
    assert stage.data == f"path:{specs.root / 'specs' / 'corpus.jsonl'}"
    assert stage.from_ == f"path:{specs.root / 'models' / 'tiny'}"


def test_existing_relative_folder_is_a_path_not_a_hub_id(specs):
    (specs.root / "org" / "model").mkdir(parents=True)
    spec = specs.load('[stages.a]\nkind = "pretrain"\nfrom = "org/model"\ndata = "builtin:stdlib-docs"\n')
    assert spec.stages["a"].from_ == f"path:{specs.root / 'org' / 'model'}"


def test_absolute_and_home_paths(specs, tmp_path, monkeypatch):
    corpus = tmp_path / "abs.txt"
    corpus.write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = specs.load(
        f"""
        [stages.a]
        kind = "pretrain"
        data = "{corpus}"
        [stages.b]
        kind = "pretrain"
        data = "~/abs.txt"
        """
    )
    assert spec.stages["a"].data == spec.stages["b"].data == f"path:{corpus}"


def test_stage_name_wins_over_a_file_of_the_same_name(specs):
    (specs.root / "base").write_text("not a stage")
    spec = specs.load(
        """
        [stages.base]
        kind = "pretrain"
        [stages.next]
        kind = "pretrain"
        from = "base"
        data = "./base"
        """
    )
    assert spec.stages["next"].from_ == "stage:base"
    assert spec.stages["next"].data == f"path:{specs.root / 'base'}"


def test_canonical_references_are_accepted_as_input(specs):
    corpus = specs.root / "c.txt"
    corpus.write_text("x")
    spec = specs.load(
        f"""
        [stages.a]
        kind = "pretrain"
        [stages.b]
        kind = "pretrain"
        from = "stage:a"
        tokenizer = "hub:org/tok"
        data = "path:{corpus}"
        """
    )
    b = spec.stages["b"]
    assert (b.from_, b.tokenizer, b.data) == ("stage:a", "hub:org/tok", f"path:{corpus}")


def test_to_dict_is_json_and_rebuilds_the_specs(specs):
    spec = specs.load(
        """
        [stages.a]
        kind = "pretrain"
        learning_rate = 3e-4
        [stages.b]
        kind = "pretrain"
        from = "a"
        """
    )
    data = spec.to_dict()
    assert list(data) == ["a", "b"]
    assert json.loads(json.dumps(data)) == data
    assert data["b"]["from"] == "stage:a"  # by alias
    assert data["a"]["learning_rate"] == 3e-4
    assert set(data["a"]) == {f.alias or n for n, f in PretrainSpec.model_fields.items()}
    for name, config in data.items():
        assert stage_spec_from_dict(config) == spec.stages[name]


def test_spec_is_immutable(specs):
    spec = specs.load('[stages.a]\nkind = "pretrain"\n')
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.stages["b"] = spec.stages["a"]  # type: ignore[index]


def test_spec_pickles(specs):
    spec = specs.load('[stages.a]\nkind = "pretrain"\n[stages.b]\nkind = "pretrain"\nfrom = "a"\n')
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec
    assert list(again.stages) == ["a", "b"] and again.parents["b"] == "a"
    with pytest.raises(TypeError):
        again.parents["b"] = None  # type: ignore[index]


def test_parse_spec_without_a_file(tmp_path):
    spec = parse_spec('[stages.a]\nkind = "pretrain"\n', source="inline.toml", base_dir=tmp_path)
    assert spec.name == "inline"
    assert spec.source == "inline.toml"


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes('\ufeff[stages.a]\nkind = "pretrain"\n'.encode())
    assert list(load_spec(path).stages) == ["a"]


def test_load_spec_accepts_str_paths(specs):
    path = specs.write('[stages.a]\nkind = "pretrain"\n')
    assert load_spec(str(path)).source == str(path)
    assert isinstance(load_spec(Path(path)).base_dir, Path)
