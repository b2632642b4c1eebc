"""Data files are decoded while the spec is checked (issue 14): a byte that is
not UTF-8 is named with its file and line before any stage starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import SpecError, parse_spec
from engine.spec import refs


def problems(tmp_path: Path, prompts: str) -> list[str]:
    text = f'[stages.s]\nkind = "sample"\nfrom = "builtin:llama-1m"\nprompts = "{prompts}"\n'
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="p.toml", base_dir=tmp_path)
    return caught.value.problems


def test_a_bad_byte_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_bytes(b"first\nsecond\nthird \xff here\n")
    assert problems(tmp_path, "./prompts.txt") == [
        f"p.toml: stage 's', field 'prompts': {tmp_path / 'prompts.txt'}: line 3 is not UTF-8 text (byte 0xff); "
        "save the file as UTF-8"]


def test_the_line_is_right_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refs, "_CHUNK", 7)  # a multi-byte character split across reads is fine; the bad byte is found
    (tmp_path / "rows.jsonl").write_bytes(
        '{"prompt": "café"}\n{"prompt": "naïve"}\n'.encode() + b'{"prompt": "\xc3("}\n')
    [line] = problems(tmp_path, "./rows.jsonl")
    assert line.endswith("rows.jsonl: line 3 is not UTF-8 text (byte 0xc3); save the file as UTF-8")


def test_a_file_cut_in_a_character_is_named(tmp_path: Path) -> None:
    (tmp_path / "cut.txt").write_bytes("one\ntwo é".encode()[:-1])
    [line] = problems(tmp_path, "./cut.txt")
    assert "cut.txt: ends in the middle of a UTF-8 character (line 2)" in line


def test_good_text_and_other_files_pass(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("naïve café\nzwei\n", encoding="utf-8")
    spec = parse_spec('[stages.s]\nkind = "sample"\nfrom = "builtin:llama-1m"\nprompts = "./ok.txt"\n',
                      source="p.toml", base_dir=tmp_path)
    assert spec.stages["s"].prompts == f"path:{tmp_path / 'ok.txt'}"
