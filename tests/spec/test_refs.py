"""`resolve_ref` on its own: the order in which a written reference is read."""

from __future__ import annotations

import pytest

from engine.spec.refs import Ref, RefError, resolve_ref


def resolve(raw, tmp_path, *, section="model", stages=("a", "b"), current=None):
    return resolve_ref(raw, section=section, stages=list(stages), base_dir=tmp_path,
                       current_stage=current)


@pytest.mark.parametrize(
    ("raw", "section", "expected"),
    [
        ("a", "model", Ref("stage", "a")),
        ("stage:b", "data", Ref("stage", "b")),
        ("builtin:llama-1m", "model", Ref("builtin", "llama-1m")),
        ("llama-10m", "model", Ref("builtin", "llama-10m")),
        ("builtin:bpe-4k", "tokenizer", Ref("builtin", "bpe-4k")),
        ("stdlib-docs", "data", Ref("builtin", "stdlib-docs")),
        ("org/name", "model", Ref("hub", "org/name")),
        ("hf:Org-1/name_2.v3", "model", Ref("hub", "Org-1/name_2.v3")),
        ("hub:org/name", "data", Ref("hub", "org/name")),
        ("  org/name  ", "model", Ref("hub", "org/name")),
    ],
)
def test_resolves(tmp_path, raw, section, expected):
    assert resolve(raw, tmp_path, section=section) == expected


def test_canonical_string_round_trip():
    for text in ("stage:a", "builtin:llama-4m", "path:/x/y", "hub:o/n"):
        assert str(Ref.parse(text)) == text
    with pytest.raises(ValueError):
        Ref.parse("llama-4m")


@pytest.mark.parametrize("name", ["c.txt", "c.jsonl", "c.json", "c.parquet", "c.csv", "c.arrow", "C.TXT"])
def test_data_extensions_are_paths(tmp_path, name):
    (tmp_path / name).write_text("x")
    assert resolve(name, tmp_path, section="data") == Ref("path", str(tmp_path / name))
    (tmp_path / name).unlink()
    with pytest.raises(RefError, match="no such file or folder"):
        resolve(name, tmp_path, section="data")


def test_path_prefixes_are_always_paths(tmp_path):
    (tmp_path / "a").mkdir()  # same name as a stage
    assert resolve("./a", tmp_path) == Ref("path", str(tmp_path / "a"))
    assert resolve(".", tmp_path) == Ref("path", str(tmp_path))
    assert resolve("a/..", tmp_path) == Ref("path", str(tmp_path))


def test_existing_relative_path_without_prefix(tmp_path):
    (tmp_path / "weights").mkdir()
    assert resolve("weights", tmp_path) == Ref("path", str(tmp_path / "weights"))


def test_missing_nested_path_that_is_no_hub_id(tmp_path):
    with pytest.raises(RefError, match="no such file or folder"):
        resolve("x/y/z", tmp_path)


def test_self_reference(tmp_path):
    with pytest.raises(RefError, match="cannot use its own output"):
        resolve("a", tmp_path, current="a")
    with pytest.raises(RefError, match="cannot use its own output"):
        resolve("stage:a", tmp_path, current="a")


def test_unknown_bare_word(tmp_path):
    with pytest.raises(RefError) as info:
        resolve("c", tmp_path)
    assert str(info.value) == "unknown stage 'c' (stages in this file: a, b)"


def test_unknown_bare_word_without_any_stage(tmp_path):
    with pytest.raises(RefError, match=r"\(stages in this file: none\)"):
        resolve("zzz", tmp_path, stages=())


def test_null_byte(tmp_path):
    with pytest.raises(RefError):
        resolve("a\0b", tmp_path)
