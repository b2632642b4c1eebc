"""Reading preference files: every format, prompt extraction, and bad lines named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import FeedbackFormatError, UserInputError
from engine.feedback import Message, PreferencePair, Response, UnpairedExample, content_key, read_feedback


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def test_trl_plain_text(tmp_path):
    path = jsonl(tmp_path / "prefs.jsonl",
                 {"prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "ignored"},
                 "",  # blank lines are skipped
                 {"prompt": "2+2?", "chosen": "four", "rejected": "5", "margin": 2})
    result = read_feedback(path)
    assert (result.format, result.records) == ("trl", 2)
    key = content_key("2+2?")
    assert result.pairs == (PreferencePair(key, "2+2?", "4", "5"), PreferencePair(key, "2+2?", "four", "5", 2.0))
    assert result.judgements == () and result.unpaired == ()


def test_trl_conversational_with_an_explicit_prompt(tmp_path):
    path = jsonl(tmp_path / "c.jsonl", {"prompt": [user("hi")], "chosen": [bot("hello")], "rejected": [bot("go")]})
    (pair,) = read_feedback(path).pairs
    assert pair.prompt == (Message("user", "hi"),)
    assert pair.chosen == (Message("assistant", "hello"),) and pair.rejected == (Message("assistant", "go"),)


def test_trl_implicit_prompt_is_the_shared_leading_messages(tmp_path):
    shared = [{"role": "system", "content": "be kind"}, user("hi"), bot("hello"), user("tell a joke")]
    path = jsonl(tmp_path / "i.jsonl", {"chosen": [*shared, bot("a good joke")], "rejected": [*shared, bot("no")]})
    result = read_feedback(path)
    (pair,) = result.pairs
    assert result.format == "trl"
    assert [m.content for m in pair.prompt] == ["be kind", "hi", "hello", "tell a joke"]
    assert pair.chosen == (Message("assistant", "a good joke"),) and pair.rejected == (Message("assistant", "no"),)
    assert pair.group == content_key(pair.prompt)


def test_anthropic_hh_prompt_is_the_dialogue_before_the_last_assistant_turn(tmp_path):
    dialogue = "\n\nHuman: What is a cat?\n\nAssistant: An animal.\n\nHuman: And a dog?\n\nAssistant:"
    path = jsonl(tmp_path / "hh.jsonl", {"chosen": dialogue + " Also an animal.", "rejected": dialogue + " A cat."})
    result = read_feedback(path)
    (pair,) = result.pairs
    assert result.format == "hh"
    assert pair.prompt == (Message("user", "What is a cat?"), Message("assistant", "An animal."),
                           Message("user", "And a dog?"))
    assert pair.chosen == (Message("assistant", "Also an animal."),)
    assert pair.rejected == (Message("assistant", "A cat."),)


def test_hh_records_that_differ_before_the_end_are_named(tmp_path):
    path = jsonl(tmp_path / "hh.jsonl",
                 {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
                 {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: c"},
                 {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: more", "rejected": "\n\nHuman: a\n\nAssistant: c"},
                 {"chosen": "just text", "rejected": "more text"})
    with pytest.raises(FeedbackFormatError) as caught:
        read_feedback(path)
    problems = caught.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "differ before their last Assistant turn" in problems[0]
    assert "ends with a Human turn" in problems[1]
    assert "not an HH dialogue" in problems[2]


def test_kto_unpaired(tmp_path):
    path = jsonl(tmp_path / "kto.jsonl", {"prompt": "p", "completion": "good", "label": True},
                 {"prompt": "p", "completion": "bad", "label": False})
    result = read_feedback(path)
    assert result.format == "kto"
    assert result.unpaired == (UnpairedExample(content_key("p"), "p", "good", True),
                               UnpairedExample(content_key("p"), "p", "bad", False))


def test_ranked_lists(tmp_path):
    path = jsonl(tmp_path / "ranked.jsonl",
                 {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, [0, 1]], "annotator": "ann"},
                 {"prompt": "q", "responses": ["x", "y"]},  # no ranking: already best first
                 {"prompt": "r", "prompt_key": "r-1", "responses": [{"text": "u", "model": "sft", "id": "s1"},
                                                                    {"text": "v", "model": "ppo", "id": "s2"}],
                  "ranking": [1, 0]})
    result = read_feedback(path)
    assert result.format == "ranked"
    first, second, third = result.judgements
    assert first.outcome == "ranking" and first.ranking == ((2,), (0, 1)) and first.annotator == "ann"
    assert first.prompt_key == content_key("p") and first.responses[0] == Response(content_key("a"), "a")
    assert second.ranking == ((0,), (1,))
    assert third.prompt_key == "r-1" and third.responses == (Response("s1", "u", "sft"), Response("s2", "v", "ppo"))


def test_bad_rankings_are_named(tmp_path):
    path = jsonl(tmp_path / "ranked.jsonl",
                 {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0]},
                 {"prompt": "p", "responses": ["a"]},
                 {"prompt": "p", "responses": ["a", "a"]},
                 {"prompt": "p", "responses": ["a", [bot("b")]]})
    with pytest.raises(FeedbackFormatError) as caught:
        read_feedback(path)
    assert caught.value.problems == [
        f"{path}:1: ranking leaves out response(s) [1]; expected a full order of all 3",
        f"{path}:2: responses is list of 1; expected a list of two or more responses",
        f"{path}:3: two responses are the same (same text or id); expected distinct responses",
        f"{path}:4: mixes plain text and conversations (prompt string, response 0 string, response 1 conversation); "
        "expected one form for all",
    ]


def test_parquet_in_both_forms(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "a", "rejected": "b"}]), plain)
    assert read_feedback(plain).pairs == (PreferencePair(content_key("p"), "p", "a", "b"),)
    conversational = tmp_path / "conv.parquet"
    pq.write_table(pa.Table.from_pylist([{"chosen": [user("hi"), bot("a")], "rejected": [user("hi"), bot("b")]}]),
                   conversational)
    (pair,) = read_feedback(conversational).pairs
    assert pair.prompt == (Message("user", "hi"),) and pair.chosen == (Message("assistant", "a"),)


def test_a_bad_parquet_row_is_named_by_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "a", "rejected": "b"},
                                         {"prompt": "p", "chosen": "a", "rejected": None}]), path)
    with pytest.raises(FeedbackFormatError, match=rf"^{path}:row 2: no 'rejected' field"):
        read_feedback(path)


def test_every_malformed_line_is_reported_and_nothing_returned(tmp_path):
    path = jsonl(tmp_path / "mixed.jsonl",
                 {"prompt": "p", "chosen": "a", "rejected": "b"},
                 '{"prompt": "p", "chosen": "a",',
                 {"prompt": "p", "chosen": "a"},
                 '[1, 2]',
                 {"prompt": "p", "chosen": 3, "rejected": "b"},
                 {"prompt": "p", "chosen": [user("x")], "rejected": "b"},
                 {"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"})
    with pytest.raises(FeedbackFormatError) as caught:
        read_feedback(path)
    assert caught.value.problems == [
        f"{path}:2: not valid JSON (Expecting property name enclosed in double quotes at column 31); "
        "expected one JSON object per line",
        f"{path}:3: no 'rejected' field; expected a string or a list of {{role, content}} messages",
        f"{path}:4: a JSON list; expected a JSON object per line",
        f"{path}:5: chosen is int 3; expected a string or a list of {{role, content}} messages",
        f"{path}:6: mixes plain text and conversations (prompt string, chosen conversation, rejected string); "
        "expected one form for all",
        f"{path}:7: margin is 'big'; expected a finite number or null",
    ]
    assert str(caught.value).count("\n") == 5  # all in one error, one line each
    assert caught.value.exit_code == 2


def test_the_message_shows_the_first_twenty_problems(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", *["not json"] * 25)
    with pytest.raises(FeedbackFormatError) as caught:
        read_feedback(path)
    assert len(caught.value.problems) == 25
    lines = str(caught.value).splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 5 more problems" and lines[19].startswith(f"{path}:20:")


def test_an_explicit_format_overrides_detection(tmp_path):
    path = jsonl(tmp_path / "prefs.jsonl", {"prompt": "p", "chosen": "a", "rejected": "b"})
    with pytest.raises(FeedbackFormatError, match=rf"{path}:1: no 'completion' field"):
        read_feedback(path, format="kto")
    # strings without a prompt are HH when detected, and named as not TRL when forced
    hh = jsonl(tmp_path / "hh.jsonl",
               {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"})
    assert read_feedback(hh).format == "hh"
    with pytest.raises(FeedbackFormatError, match="no 'prompt' field and chosen/rejected are not both conversations"):
        read_feedback(hh, format="trl")


def test_undetectable_empty_and_unknown_files_are_refused(tmp_path):
    with pytest.raises(FeedbackFormatError, match=r":1: cannot tell the format from the fields \(prompt, text\)"):
        read_feedback(jsonl(tmp_path / "sft.jsonl", {"prompt": "p", "text": "t"}))
    with pytest.raises(FeedbackFormatError, match="no records"):
        read_feedback(jsonl(tmp_path / "empty.jsonl", ""))
    with pytest.raises(UserInputError, match=r"unknown file type \.txt"):
        read_feedback(jsonl(tmp_path / "prefs.txt", {"prompt": "p"}))
    with pytest.raises(UserInputError, match="no such file"):
        read_feedback(tmp_path / "missing.jsonl")
    with pytest.raises(UserInputError, match="CSV holds the judgement table only"):
        read_feedback(tmp_path / "x.csv", format="trl") if (tmp_path / "x.csv").write_text("a\n") else None
    with pytest.raises(UserInputError, match="import format 'tsv'"):
        read_feedback(tmp_path / "x.csv", format="tsv")
