"""Hub data as the field names it (issue 15 item 3): the subset, split and
revision a reference names are what the stages read, from a local `datasets`
folder with several splits and configs here (no network), and `.jsonl.gz`
files are read wherever JSONL files are."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from engine.errors import FeedbackFormatError, StageFailed
from engine.feedback.importers import read_feedback
from engine.feedback.records import Message
from engine.spec.data_refs import DataOptions
from engine.stages.common import datasets_source
from engine.stages.common.context import Source
from engine.stages.common.data_loading import load_prompts, load_records, load_texts
from engine.stages.common.datasets_source import dataset_rows
from engine.stages.common.preference_sources import read_preference_source, source_name


def hh(dialogue: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{'Human' if role == 'user' else 'Assistant'}: {text}" for role, text in dialogue)


def hh_row(topic: str, number: int) -> dict[str, str]:
    asked = [("user", f"{topic} question {number}?")]
    return {"chosen": hh([*asked, ("assistant", "a kind answer")]),
            "rejected": hh([*asked, ("assistant", "a rude answer")])}


def write_jsonl_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three local data sets laid out as people get them:

    - `chat/`: save_to_disk of a DatasetDict with ultrachat_200k's splits
      (train_sft, test_sft), messages rows;
    - `prefs/`: a hub dataset repo with two configs declared in its README
      (`default`: ultrafeedback_binarized's train_prefs/train_sft/test_prefs; `short`: train),
      a plain prompt beside chosen/rejected conversations that repeat it;
    - `hh/`: Anthropic/hh-rlhf's layout, no configs, one data folder per subset
      (harmless-base, helpful-base), each with train.jsonl.gz and test.jsonl.gz.
    """
    root = tmp_path_factory.mktemp("hub-data")
    chat = {split: datasets.Dataset.from_list([
        {"messages": [{"role": "user", "content": f"{split} prompt {i}"},
                      {"role": "assistant", "content": f"{split} answer {i}"}]} for i in range(3)])
        for split in ("train_sft", "test_sft")}
    datasets.DatasetDict(chat).save_to_disk(str(root / "chat"))

    def pref(split: str, i: int) -> dict[str, Any]:
        prompt = f"{split} prompt {i}"
        turn = {"role": "user", "content": prompt}
        return {"prompt": prompt, "chosen": [turn, {"role": "assistant", "content": "good"}],
                "rejected": [turn, {"role": "assistant", "content": "bad"}], "score_chosen": 8.0}

    prefs = root / "prefs"
    for split in ("train_prefs", "train_sft", "test_prefs"):
        write_jsonl(prefs / "data" / f"{split}.jsonl", [pref(split, i) for i in range(4)])
    write_jsonl(prefs / "short" / "train.jsonl", [pref("short", 0)])
    (prefs / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: default\n  data_files:\n"
        "  - split: train_prefs\n    path: data/train_prefs.jsonl\n"
        "  - split: train_sft\n    path: data/train_sft.jsonl\n"
        "  - split: test_prefs\n    path: data/test_prefs.jsonl\n"
        "- config_name: short\n  data_files:\n"
        "  - split: train\n    path: short/train.jsonl\n---\n", encoding="utf-8")

    for subset in ("harmless-base", "helpful-base"):
        for split, count in (("train", 3), ("test", 2)):
            write_jsonl_gz(root / "hh" / subset / f"{split}.jsonl.gz",
                           [hh_row(f"{subset} {split}", i) for i in range(count)])
    return root


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def path_source(folder: Path, query: str = "") -> Source:
    return Source("path", f"{folder}{query}")


# --- splits and configs of a local datasets folder -----------------------------------


def test_a_saved_dataset_reads_the_split_named(data: Path, tmp_path: Path) -> None:
    test = load_records(path_source(data / "chat", "?split=test_sft"), cache_dir=tmp_path)
    assert [row["messages"][0]["content"] for row in test] == [f"test_sft prompt {i}" for i in range(3)]
    # No split named: the one split whose name starts with train.
    train = load_records(path_source(data / "chat"), cache_dir=tmp_path)
    assert train[0]["messages"][0]["content"] == "train_sft prompt 0"
    prompts = load_prompts(path_source(data / "chat", "?split=test_sft"), cache_dir=tmp_path, count=2)
    assert [p["text"] for p in prompts] == ["test_sft prompt 0", "test_sft prompt 1"]


def test_a_repo_folder_reads_the_config_and_split_named(data: Path, tmp_path: Path) -> None:
    rows = load_records(path_source(data / "prefs", "?split=test_prefs"), cache_dir=tmp_path)
    assert [row["prompt"] for row in rows] == [f"test_prefs prompt {i}" for i in range(4)]
    short = load_records(path_source(data / "prefs", "?subset=short&split=train"), cache_dir=tmp_path)
    assert [row["prompt"] for row in short] == ["short prompt 0"]
    texts = load_texts(path_source(data / "prefs", "?subset=short"), cache_dir=tmp_path, text_field="prompt")
    assert texts == ["short prompt 0"]  # `short` has only `train`


def test_a_subset_without_configs_is_the_data_folder_of_that_name(data: Path, tmp_path: Path) -> None:
    rows = load_records(path_source(data / "hh", "?subset=harmless-base&split=test"), cache_dir=tmp_path)
    assert [row["chosen"] for row in rows] == [hh_row("harmless-base test", i)["chosen"] for i in range(2)]


def test_what_a_folder_lacks_is_named_with_what_it_has(data: Path, tmp_path: Path) -> None:
    # Two splits start with train (as in ultrafeedback_binarized): the reference must name one.
    with pytest.raises(StageFailed, match=r"no 'train' split; name one after the data set, e\.g\. \?split=train_prefs "
                                          r"\(splits: train_prefs, train_sft, test_prefs\)"):
        load_records(path_source(data / "prefs"), cache_dir=tmp_path)
    with pytest.raises(StageFailed, match=r"prefs\?subset=long: no subset 'long' \(subsets: default, short\)"):
        load_records(path_source(data / "prefs", "?subset=long"), cache_dir=tmp_path)
    with pytest.raises(StageFailed, match=r"prefs\?split=valid: no split 'valid' \(splits: train_prefs, train_sft, "
                                          r"test_prefs\)"):
        load_records(path_source(data / "prefs", "?split=valid"), cache_dir=tmp_path)


def test_hub_loading_passes_subset_split_and_revision_to_datasets(
    data: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real load through the hub code path, from a local path (revision is ignored locally).
    rows = list(dataset_rows(str(data / "prefs"), DataOptions("short", "train", "main"), hub=True))
    assert [row["prompt"] for row in rows] == ["short prompt 0"]

    # What reaches datasets for a hub id: recorded by fakes, since nothing may be downloaded here.
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def record(name: str, result: Any) -> Any:
        def fake(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, args, kwargs))
            return result
        return fake

    monkeypatch.setattr(datasets, "get_dataset_config_names", record("configs", ["default"]))
    monkeypatch.setattr(datasets, "get_dataset_split_names", record("splits", ["train", "test"]))
    monkeypatch.setattr(datasets, "load_dataset", record("load", [hh_row("x", 0)]))
    dataset_rows("Anthropic/hh-rlhf", DataOptions(subset="harmless-base", split="test", revision="abc123"),
                 hub=True, streaming=True)
    assert calls == [
        ("configs", ("Anthropic/hh-rlhf",), {"revision": "abc123"}),
        ("splits", ("Anthropic/hh-rlhf",), {"config_name": None, "revision": "abc123", "data_dir": "harmless-base"}),
        ("load", ("Anthropic/hh-rlhf", None),
         {"split": "test", "streaming": True, "revision": "abc123", "data_dir": "harmless-base"}),
    ]
    calls.clear()
    monkeypatch.setattr(datasets, "get_dataset_config_names", record("configs", ["default", "gen"]))
    rows = load_records(Source("hub", "HuggingFaceH4/ultrachat_200k@v1?subset=gen"), cache_dir=Path("/nonexistent"),
                        max_records=5)
    assert rows == [hh_row("x", 0)]
    assert calls[1:] == [
        ("splits", ("HuggingFaceH4/ultrachat_200k",), {"config_name": "gen", "revision": "v1"}),
        ("load", ("HuggingFaceH4/ultrachat_200k", "gen"), {"split": "train", "streaming": True, "revision": "v1"}),
    ]


def test_a_hub_dataset_that_cannot_load_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "get_dataset_split_names", offline)
    with pytest.raises(StageFailed, match=r"cannot load dataset 'org/name@v2': offline"):
        list(dataset_rows("org/name", DataOptions(revision="v2"), hub=True))


def test_the_default_split_is_train_or_the_one_train_split() -> None:
    assert datasets_source.default_split(["test", "train"], "x") == "train"
    assert datasets_source.default_split(["train_sft", "test_sft"], "x") == "train_sft"
    assert datasets_source.default_split(["validation"], "x") == "validation"
    with pytest.raises(StageFailed, match=r"x: no 'train' split; name one after the data set, e\.g\. "
                                          r"\?split=train_prefs \(splits: train_prefs, train_sft, test_prefs\)"):
        datasets_source.default_split(["train_prefs", "train_sft", "test_prefs"], "x")


# --- preferences from a datasets folder or the hub -----------------------------------


def test_preferences_from_a_trl_dataset_with_a_repeated_plain_prompt(data: Path) -> None:
    source = path_source(data / "prefs", "?split=test_prefs")
    result = read_preference_source(source)
    assert result.format == "trl" and result.records == 4
    first = result.pairs[0]
    assert first.prompt == (Message("user", "test_prefs prompt 0"),)
    assert first.chosen == (Message("assistant", "good"),) and first.rejected == (Message("assistant", "bad"),)
    assert source_name(source) == "prefs?split=test_prefs"


def test_preferences_from_hh_subsets(data: Path) -> None:
    result = read_preference_source(path_source(data / "hh", "?subset=helpful-base&split=train"))
    assert result.format == "hh" and len(result.pairs) == 3
    assert result.pairs[2].prompt == (Message("user", "helpful-base train question 2?"),)
    assert result.pairs[2].chosen == (Message("assistant", "a kind answer"),)


def test_bad_dataset_rows_are_listed_with_the_data_set_and_row(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(
        [hh_row("ok", 0), {"chosen": "no turns here", "rejected": "none"}])}).save_to_disk(str(folder))
    with pytest.raises(FeedbackFormatError) as caught:
        read_preference_source(path_source(folder))
    [problem] = caught.value.problems
    assert problem.startswith(f"{folder}: row 2: chosen is not an HH dialogue")


# --- .jsonl.gz wherever JSONL is read ------------------------------------------------


def test_jsonl_gz_files_are_read_as_data_prompts_and_preferences(data: Path, tmp_path: Path) -> None:
    gz = data / "hh" / "harmless-base" / "train.jsonl.gz"
    assert [r["chosen"] for r in load_records(Source("path", str(gz)), cache_dir=tmp_path)] == [
        hh_row("harmless-base train", i)["chosen"] for i in range(3)]
    result = read_feedback(gz)  # what `rlhf prefs import` reads
    assert result.format == "hh" and len(result.pairs) == 3
    assert read_preference_source(Source("path", str(gz))).pairs == result.pairs

    prompts = tmp_path / "prompts.json.gz"
    prompts.write_bytes(gzip.compress(json.dumps([{"prompt": "first?"}, {"prompt": "second?"}]).encode()))
    assert [p["text"] for p in load_prompts(Source("path", str(prompts)), cache_dir=tmp_path, count=None)] == [
        "first?", "second?"]
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt.gz").write_bytes(gzip.compress(b"one\n\ntwo\n"))
    write_jsonl_gz(corpus / "b.jsonl.gz", [{"text": "three"}])
    assert load_texts(Source("path", str(corpus)), cache_dir=tmp_path) == ["one", "two", "three"]


def test_a_bad_line_or_a_corrupt_gz_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.jsonl.gz"
    bad.write_bytes(gzip.compress(json.dumps(hh_row("a", 0)).encode() + b"\n{broken\n"))
    with pytest.raises(FeedbackFormatError) as caught:
        read_feedback(bad)
    assert caught.value.problems == [f"{bad}:2: not valid JSON (Expecting property name enclosed in double quotes "
                                     "at column 2); expected one JSON object per line"]
    with pytest.raises(StageFailed, match=r"pairs\.jsonl\.gz: line 2 is not valid JSON"):
        load_records(Source("path", str(bad)), cache_dir=tmp_path)

    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(json.dumps(hh_row("a", 0)) + "\n")
    with pytest.raises(FeedbackFormatError, match=r"plain\.jsonl\.gz: not a readable gzip file \("):
        read_feedback(plain)
    with pytest.raises(StageFailed, match=r"plain\.jsonl\.gz: not a readable gzip file \("):
        load_records(Source("path", str(plain)), cache_dir=tmp_path)
