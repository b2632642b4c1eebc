"""The TOML renderer: what it writes reads back, through tomllib, as the data it was given."""

from __future__ import annotations

import math
import tomllib

import pytest

from engine.spec.toml_render import Comments, render_toml, toml_value

AWKWARD_STRINGS = [
    "",
    'say "hi"',
    "back\\slash and C:\\path\\",
    "two\nlines\r\nand a tab\t",
    "Ünïcödé, 日本語, emoji 🦙",
    "control \x00 \x01 \x1b \x7f \b \f",
    "'single' and '''triple''' quotes",
    '"""',
    "# not a comment",
    "[stages.not_a_table]",
]


def round_trip(document: dict, comments: Comments | None = None) -> dict:
    return tomllib.loads(render_toml(document, comments))


@pytest.mark.parametrize("text", AWKWARD_STRINGS)
def test_strings_round_trip(text: str) -> None:
    assert round_trip({"value": text, "stages": {"s": {"value": text}}}) == {
        "value": text, "stages": {"s": {"value": text}}}


def test_non_ascii_is_written_as_itself() -> None:
    assert toml_value("Ünï 🦙") == '"Ünï 🦙"'


@pytest.mark.parametrize("number", [1e-5, 2e-3, 0.1, 1.0, -0.0, 1e16, 1e-300, 5e-324, 123456789.123456789,
                                    math.pi, float("inf"), float("-inf")])
def test_floats_round_trip_exactly(number: float) -> None:
    read = round_trip({"x": number})["x"]
    assert isinstance(read, float) and read == number and math.copysign(1, read) == math.copysign(1, number)


def test_float_text_is_the_shortest_exact_one() -> None:
    assert toml_value(1e-5) == "1e-05" and toml_value(1.0) == "1.0" and toml_value(0.001) == "0.001"


def test_nan_round_trips() -> None:
    assert math.isnan(round_trip({"x": float("nan")})["x"])


def test_ints_and_bools_keep_their_types() -> None:
    document = {"zero": 0, "big": 2**63 - 1, "small": -(2**63), "yes": True, "no": False}
    read = round_trip(document)
    assert read == document
    assert all(type(read[k]) is type(v) for k, v in document.items())


def test_integers_past_64_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        toml_value(2**63)


def test_lists() -> None:
    document = {"names": ["a", 'b"', "c\\", "ü"], "empty": [], "numbers": [1, 2.5, 1e-5], "nested": [[1], []],
                "tuple": ("x", "y"), "tables": [{"r": 8, "name": "q"}, {}]}
    expected = {**document, "tuple": ["x", "y"]}
    assert round_trip(document) == expected


def test_none_is_omitted_everywhere_but_in_a_list() -> None:
    document = {"name": None, "kept": 1,
                "stages": {"s": {"kind": "sft", "data": None, "inline": [{"a": None, "b": 2}]}}}
    assert round_trip(document) == {"kept": 1, "stages": {"s": {"kind": "sft", "inline": [{"b": 2}]}}}
    with pytest.raises(TypeError, match="no null"):
        render_toml({"values": [1, None]})


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(TypeError):
        toml_value(object())
    with pytest.raises(TypeError):
        toml_value(b"bytes")
    with pytest.raises(ValueError, match="surrogate"):
        toml_value("bad \udcff")


def test_nested_tables_follow_their_tables_keys() -> None:
    # lora comes before later keys in the data; TOML needs it after them, as [stages.ppo.lora]
    document = {
        "name": "n",
        "stages": {
            "ppo": {"kind": "ppo", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}, "beta": 0.2},
            "sft": {"kind": "sft"},
        },
    }
    text = render_toml(document)
    assert "[stages.ppo.lora]" in text and "[stages]" not in text
    assert round_trip(document) == document


def test_empty_tables_exist() -> None:
    assert round_trip({"stages": {"s": {}}, "other": {}}) == {"stages": {"s": {}}, "other": {}}


def test_keys_that_need_quoting_are_quoted() -> None:
    document = {"a b": 1, "dotted.key": 2, "": 3, 'q"uote': 4, "ünï": 5, "bare-key_1": 6,
                "stages": {"my stage.x": {"kind": "sft", "sub table": {"k": 1}}}}
    text = render_toml(document)
    assert "bare-key_1 = 6" in text and '"dotted.key" = 2' in text
    assert '[stages."my stage.x"."sub table"]' in text
    assert round_trip(document) == document


def test_comments_sit_where_they_are_keyed_and_change_nothing() -> None:
    document = {"name": None, "description": "d", "stages": {"sft": {"kind": "sft", "from": "pretrain", "seed": None}}}
    comments = Comments(
        header="A header\n\n  indented",
        above={("stages", "sft"): "the stage", ("stages", "sft", "from"): "where from\nsecond line"},
        beside={("name",): "run name", ("stages", "sft"): "beside the header", ("stages", "sft", "kind"): "k"},
        examples={("name",): "my-run", ("stages", "sft", "seed"): 0},
    )
    text = render_toml(document, comments)
    assert text.splitlines() == [
        "# A header",
        "#",
        "#   indented",
        "",
        '# name = "my-run"  # run name',
        'description = "d"',
        "",
        "# the stage",
        "[stages.sft]  # beside the header",
        'kind = "sft"  # k',
        "# where from",
        "# second line",
        'from = "pretrain"',
        "# seed = 0",
    ]
    assert tomllib.loads(text) == {"description": "d", "stages": {"sft": {"kind": "sft", "from": "pretrain"}}}


def test_a_comment_on_a_missing_key_goes_with_it() -> None:
    comments = Comments(above={("stages", "rank", "judge"): "who ranks"}, beside={("gone",): "x"})
    text = render_toml({"stages": {"rank": {"kind": "rank"}}}, comments)
    assert text == '[stages.rank]\nkind = "rank"\n'


def test_comments_cannot_break_the_file() -> None:
    with pytest.raises(ValueError, match="control characters"):
        render_toml({"a": 1}, Comments(above={("a",): "bad\rcomment"}))
    with pytest.raises(ValueError, match="one line"):
        render_toml({"a": 1}, Comments(beside={("a",): "two\nlines"}))
