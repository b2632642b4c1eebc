"""Data references name the part of a data set they read (issue 15 item 3):
`org/name@REV?subset=S&split=T` for hub ids and local datasets folders,
checked while the spec loads; `.gz` files are decoded like other text files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest

from engine import SpecError, parse_spec
from engine.spec.data_refs import DataOptionError, DataOptions, data_suffix, parse_data_value, reference_from_table
from engine.spec.refs import Ref, RefError, resolve_ref


def resolve(raw: str, base: Path, *, stages: tuple[str, ...] = ("a",)) -> Ref:
    return resolve_ref(raw, section="data", stages=stages, base_dir=base, current_stage="b")


@pytest.mark.parametrize(
    ("raw", "canonical", "location", "options"),
    [
        ("HuggingFaceH4/ultrafeedback_binarized?split=train_prefs",
         "hub:HuggingFaceH4/ultrafeedback_binarized?split=train_prefs",
         "HuggingFaceH4/ultrafeedback_binarized", DataOptions(split="train_prefs")),
        ("Anthropic/hh-rlhf?split=test&subset=harmless-base",
         "hub:Anthropic/hh-rlhf?subset=harmless-base&split=test",
         "Anthropic/hh-rlhf", DataOptions(subset="harmless-base", split="test")),
        ("hf:HuggingFaceH4/ultrachat_200k@main?split=train_sft",
         "hub:HuggingFaceH4/ultrachat_200k@main?split=train_sft",
         "HuggingFaceH4/ultrachat_200k", DataOptions(split="train_sft", revision="main")),
        ("org/name?revision=refs/pr/3", "hub:org/name@refs/pr/3", "org/name", DataOptions(revision="refs/pr/3")),
        ("org/name@0123abc", "hub:org/name@0123abc", "org/name", DataOptions(revision="0123abc")),
        ("org/name", "hub:org/name", "org/name", DataOptions()),
    ],
)
def test_hub_options_resolve_to_one_canonical_form_that_reads_back(
    tmp_path: Path, raw: str, canonical: str, location: str, options: DataOptions,
) -> None:
    ref = resolve(raw, tmp_path)
    assert (ref.scheme, ref.value, ref.options) == ("hub", location, options)
    assert str(ref) == canonical
    assert Ref.parse(canonical) == ref
    assert resolve(canonical, tmp_path) == ref  # a stored spec validates again unchanged
    # What a stage receives (Source.value, after the scheme) splits back the same way.
    assert parse_data_value("hub", canonical.removeprefix("hub:")) == (location, options)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("org/name?config=harmless-base", "unknown option 'config' after '?' (options: subset, split, revision); "
                                          "did you mean 'subset'?"),
        ("org/name?splt=test", "did you mean 'split'?"),
        ("org/name?split=test&split=train", "option 'split' given twice"),
        ("org/name?split=", "split='': expected a split name such as train_prefs"),
        ("org/name?split=a b", "split='a b': expected a split name"),
        ("org/name?subset=../up", "subset='../up': expected a config name or a data folder"),
        ("org/name@v1?revision=v2", "two revisions: @v1 and revision=v2; give one"),
        ("builtin:demo-prompts?split=test", "builtin:demo-prompts: a subset, split or revision names part of a hub "
                                            "dataset or a datasets folder; a built-in data set has none"),
        ("a?split=test", "stage:a: a subset, split or revision names part of a hub dataset or a datasets folder; "
                         "a stage output has none"),
    ],
)
def test_bad_options_are_one_line_saying_what_was_expected(tmp_path: Path, raw: str, message: str) -> None:
    with pytest.raises(RefError) as caught:
        resolve(raw, tmp_path)
    assert message in str(caught.value)


def test_local_files_take_no_options_and_folders_no_revision(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p"}\n')
    with pytest.raises(RefError, match=r"rows\.jsonl is a file, read whole; a subset or split names part of a"):
        resolve("./rows.jsonl?split=test", tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(RefError, match="revision is for hub datasets; a local file or folder is read as it is"):
        resolve("./folder?revision=main", tmp_path)
    # A folder of any layout takes subset and split (checked when the stage opens it).
    ref = resolve("./folder?subset=en&split=test", tmp_path)
    assert str(ref) == f"path:{tmp_path / 'folder'}?subset=en&split=test"
    assert Ref.parse(str(ref)) == ref


def test_a_saved_dataset_is_checked_for_its_splits_and_subsets(tmp_path: Path) -> None:
    splits = {"train_sft": datasets.Dataset.from_dict({"text": ["a"]}),
              "test_sft": datasets.Dataset.from_dict({"text": ["b"]})}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "configs" / "en"))
    datasets.Dataset.from_dict({"text": ["c"]}).save_to_disk(str(tmp_path / "single"))

    assert resolve("./saved?split=test_sft", tmp_path).options == DataOptions(split="test_sft")
    with pytest.raises(RefError, match=r"saved: no split 'test' \(splits: train_sft, test_sft\)"):
        resolve("./saved?split=test", tmp_path)
    with pytest.raises(RefError, match="a folder written by save_to_disk has splits, not subsets"):
        resolve("./saved?subset=en", tmp_path)
    # A subset of a local folder may be a subfolder holding a saved dataset.
    assert resolve("./configs?subset=en&split=train_sft", tmp_path).value == str(tmp_path / "configs")
    with pytest.raises(RefError, match=r"en: no split 'train' \(splits: train_sft, test_sft\)"):
        resolve("./configs?subset=en&split=train", tmp_path)
    with pytest.raises(RefError, match=r"holds one dataset \(save_to_disk of a Dataset\), not splits"):
        resolve("./single?split=train", tmp_path)


def test_a_path_that_exists_with_a_question_mark_or_at_sign_is_a_path(tmp_path: Path) -> None:
    (tmp_path / "odd?name.jsonl").write_text('{"text": "t"}\n')
    (tmp_path / "me@home").mkdir()
    odd = resolve("./odd?name.jsonl", tmp_path)
    assert odd == Ref("path", str(tmp_path / "odd?name.jsonl"))
    assert Ref.parse(str(odd)) == odd  # written with a trailing '?' so it reads back whole
    assert resolve("me@home", tmp_path) == Ref("path", str(tmp_path / "me@home"))


def test_options_in_a_pipeline_reach_the_stored_spec(tmp_path: Path) -> None:
    text = """
    [stages.sft]
    kind = "sft"
    data = "HuggingFaceH4/ultrachat_200k@main?split=train_sft"
    eval_prompts = "HuggingFaceH4/ultrachat_200k?split=test_sft"
    [stages.dpo]
    kind = "dpo"
    from = "sft"
    preferences = ["HuggingFaceH4/ultrafeedback_binarized?split=train_prefs", "Anthropic/hh-rlhf?subset=helpful-base"]
    """
    spec = parse_spec(text.replace("\n    ", "\n"), source="p.toml", base_dir=tmp_path)
    assert spec.stages["sft"].data == "hub:HuggingFaceH4/ultrachat_200k@main?split=train_sft"
    assert spec.stages["sft"].eval_prompts == "hub:HuggingFaceH4/ultrachat_200k?split=test_sft"
    assert spec.stages["dpo"].preferences == ["hub:HuggingFaceH4/ultrafeedback_binarized?split=train_prefs",
                                              "hub:Anthropic/hh-rlhf?subset=helpful-base"]


def test_a_bad_option_in_a_pipeline_names_stage_and_field_and_exits_2(tmp_path: Path) -> None:
    text = '[stages.s]\nkind = "sample"\nfrom = "builtin:llama-1m"\nprompts = "org/name?name=x"\n'
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="p.toml", base_dir=tmp_path)
    assert caught.value.exit_code == 2
    assert caught.value.problems == [
        "p.toml: stage 's', field 'prompts': 'org/name?name=x': unknown option 'name' after '?' "
        "(options: subset, split, revision); did you mean 'subset'?"]


# --- compressed files ---------------------------------------------------------------


def prompts_problems(tmp_path: Path, prompts: str) -> list[str]:
    text = f'[stages.s]\nkind = "sample"\nfrom = "builtin:llama-1m"\nprompts = "{prompts}"\n'
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="p.toml", base_dir=tmp_path)
    assert caught.value.exit_code == 2
    return caught.value.problems


def test_a_gz_file_is_a_path_and_is_decoded_while_the_spec_loads(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "train.jsonl.gz", "wt", encoding="utf-8") as file:
        file.write(json.dumps({"prompt": "naïve café"}) + "\n")
    spec = parse_spec('[stages.s]\nkind = "sample"\nfrom = "builtin:llama-1m"\nprompts = "train.jsonl.gz"\n',
                      source="p.toml", base_dir=tmp_path)
    assert spec.stages["s"].prompts == f"path:{tmp_path / 'train.jsonl.gz'}"
    assert data_suffix("train.jsonl.gz") == ".jsonl" and data_suffix("x.JSON.GZ") == ".json"


def test_a_bad_byte_inside_a_gz_file_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "\xff"}\n'))
    assert prompts_problems(tmp_path, "./rows.jsonl.gz") == [
        f"p.toml: stage 's', field 'prompts': {tmp_path / 'rows.jsonl.gz'}: line 3 is not UTF-8 text (byte 0xff); "
        "save the file as UTF-8"]


def test_a_corrupt_or_cut_gz_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain.jsonl.gz").write_text('{"prompt": "not compressed"}\n')
    [line] = prompts_problems(tmp_path, "./plain.jsonl.gz")
    assert f"{tmp_path / 'plain.jsonl.gz'}: not a readable gzip file (" in line
    assert line.endswith("expected gzip-compressed text")
    packed = gzip.compress(b'{"prompt": "a"}\n' * 100)
    (tmp_path / "cut.json.gz").write_bytes(packed[: len(packed) // 2])
    [line] = prompts_problems(tmp_path, "./cut.json.gz")
    assert line.endswith(f"{tmp_path / 'cut.json.gz'}: the gzip file is cut short (it ends before its end marker); "
                         "expected a whole .gz file")


def test_a_data_table_becomes_the_reference_string(tmp_path: Path) -> None:
    table = {"hub": "HuggingFaceH4/ultrachat_200k", "split": "train_sft", "subset": "default", "revision": "main"}
    text = reference_from_table(table)
    assert text == "hub:HuggingFaceH4/ultrachat_200k@main?subset=default&split=train_sft"
    assert resolve(text, tmp_path) == Ref("hub", "HuggingFaceH4/ultrachat_200k",
                                          DataOptions("default", "train_sft", "main"))
    assert reference_from_table({"path": "./folder", "split": "test"}) == "path:./folder?split=test"
    for bad, message in [
        ({"hub": "a/b", "config": "x"}, "unknown key 'config' in a data table (keys: hub or path, subset, split, "
                                        "revision); did you mean 'subset'?"),
        ({"split": "x"}, 'one of hub = "ORG/NAME" or path = "./folder"'),
        ({"hub": "a/b", "split": "a&b"}, "split='a&b': expected a split name"),
        ({"path": "./x", "revision": "main"}, "revision is for hub datasets"),
    ]:
        with pytest.raises(DataOptionError) as caught:
            reference_from_table(bad)
        assert message in str(caught.value)
