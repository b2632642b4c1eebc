"""Every way a spec is rejected: one line per problem, naming file, stage and field."""

from __future__ import annotations

import pytest

from engine.errors import SpecError, UserInputError
from engine.spec import PLANNED_KINDS, STAGE_KINDS, load_spec, parse_spec
from engine.spec.catalog import BUILTINS
from engine.stages.registry import is_builtin

# The lists in messages grow as stage kinds and built-ins are added. Kinds
# registered by test plugins (the fake stage) are left out, as the
# only_builtin_stage_kinds fixture leaves them out of the messages.
KNOWN = ", ".join(k for k in STAGE_KINDS if is_builtin(k))
STILL_PLANNED = [k for k in PLANNED_KINDS if k not in STAGE_KINDS]
COMING = ", ".join(STILL_PLANNED)
DATA_SETS = ", ".join(name for name, b in BUILTINS.items() if b.section == "data")

VALID_STAGE = """
[stages.pretrain]
kind = "pretrain"
"""


def test_messages_name_the_file_as_given(specs, monkeypatch):
    specs.write('[stages.pretrain]\nkind = "pretrain"\nmax_steps = "100"\n')
    monkeypatch.chdir(specs.root)
    with pytest.raises(SpecError) as info:
        load_spec("pipeline.toml")
    assert info.value.problems == [
        "pipeline.toml: stage 'pretrain', field 'max_steps': expected an integer, got the string '100'"
    ]
    assert isinstance(info.value, UserInputError)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: no such file"]


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_bytes(b"name = '\xff\xfe'\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[stages.a\nkind = "pretrain"\n', "line 1, column 10"),
        ('[stages.a]\nkind = "pretrain\n', "line 2, column 17"),
        ('[stages.a]\nkind = \n', "line 2, column 8"),
        ('[stages.a]\nkind = "pretrain"\nkind = "pretrain"\n', "line 3"),
    ],
)
def test_toml_syntax_error_has_line_and_column(specs, text, where):
    path = specs.write(text)
    line = specs.problem(text)
    assert line.startswith(f"{path}: {where}")
    assert "invalid TOML" in line


def test_missing_stages_table(specs):
    line = specs.problem('name = "x"\n')
    assert "no [stages] table" in line
    assert "[stages.pretrain]" in line  # says what was expected


def test_empty_stages_table(specs):
    line = specs.problem("[stages]\n")
    assert "the [stages] table is empty" in line


def test_stages_not_a_table(specs):
    line = specs.problem("stages = 3\n")
    assert "field 'stages'" in line and "got the integer 3" in line


def test_stages_as_array_of_tables(specs):
    line = specs.problem('[[stages]]\nkind = "pretrain"\n')
    assert "expected [stages.NAME] tables, got an array" in line


def test_stage_that_is_not_a_table(specs):
    line = specs.problem('[stages]\npretrain = "pretrain"\n')
    assert line.endswith(
        "stage 'pretrain': expected a table [stages.pretrain], got the string 'pretrain'"
    )


def test_bad_stage_name(specs):
    line = specs.problem('[stages."my stage"]\nkind = "pretrain"\n')
    assert "stage 'my stage'" in line
    assert "letters, digits, '_' and '-'" in line


def test_missing_kind(specs):
    line = specs.problem("[stages.pretrain]\nmax_steps = 3\n")
    assert line.endswith(
        f"stage 'pretrain', field 'kind': missing; expected one of the stage kinds: {KNOWN}"
    )


def test_kind_not_a_string(specs):
    line = specs.problem("[stages.pretrain]\nkind = 1\n")
    assert "field 'kind'" in line and "got the integer 1" in line


def test_unknown_kind_lists_known_kinds(specs):
    line = specs.problem('[stages.x]\nkind = "pretrian"\n')
    assert line.endswith(
        "stage 'x', field 'kind': unknown kind 'pretrian'; did you mean 'pretrain'? "
        f"(known kinds: {KNOWN})"
    )


def test_unknown_field_suggests_the_right_one(specs):
    line = specs.problem('[stages.pretrain]\nkind = "pretrain"\nmax_step = 3\n')
    assert line.endswith(
        "stage 'pretrain', field 'max_step': unknown field for a pretrain stage; "
        "did you mean 'max_steps'?"
    )


def test_python_field_name_is_not_a_key(specs):
    # pydantic would accept `from_` (validate_by_name); the TOML key is `from`.
    line = specs.problem('[stages.pretrain]\nkind = "pretrain"\nfrom_ = "builtin:llama-1m"\n')
    assert "field 'from_': unknown field" in line and "did you mean 'from'?" in line


def test_unknown_field_without_a_close_match(specs):
    line = specs.problem('[stages.pretrain]\nkind = "pretrain"\nzzz = 3\n')
    assert line.endswith("field 'zzz': unknown field for a pretrain stage")


def test_unknown_top_level_key(specs):
    line = specs.problem('nmae = "x"\n' + VALID_STAGE)
    assert "unknown top-level key 'nmae'; did you mean 'name'?" in line


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('max_steps = "100"', "field 'max_steps': expected an integer, got the string '100'"),
        ("max_steps = 1.5", "field 'max_steps': expected an integer, got the number 1.5"),
        ("max_steps = true", "field 'max_steps': expected an integer, got the boolean true"),
        ('learning_rate = "1e-3"', "field 'learning_rate': expected a number, got the string '1e-3'"),
        ("text_field = 3", "field 'text_field': expected a string, got the integer 3"),
        ("max_documents = [1]", "field 'max_documents': expected an integer, got an array"),
        ("seed = {a = 1}", "field 'seed': expected an integer, got a table"),
        ("max_steps = 2024-01-01", "field 'max_steps': expected an integer, got the date/time 2024-01-01"),
        (
            "from = 3",
            "field 'from': expected a string (a stage name, builtin:NAME, a path or a hub id), "
            "got the integer 3",
        ),
        (
            'device = "gpu"',
            "field 'device': expected 'auto', 'cpu' or 'cuda', got the string 'gpu'; did you mean 'cpu'?",
        ),
        (
            'lr_scheduler = "cosin"',
            "field 'lr_scheduler': expected 'cosine', 'linear', 'constant' or 'constant_with_warmup', "
            "got the string 'cosin'; did you mean 'cosine'?",
        ),
    ],
)
def test_wrong_types(specs, setting, message):
    line = specs.problem(f'[stages.pretrain]\nkind = "pretrain"\n{setting}\n')
    assert line.endswith(f"stage 'pretrain', {message}"), line


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_steps = 0", "field 'max_steps': must be at least 1, got 0"),
        ("processes = 65", "field 'processes': must be at most 64, got 65"),
        ("learning_rate = 0", "field 'learning_rate': must be greater than 0, got 0"),
        ("learning_rate = -1e-3", "field 'learning_rate': must be greater than 0, got -0.001"),
        ("eval_fraction = 1.5", "field 'eval_fraction': must be less than 1, got 1.5"),
        ("block_size = 4", "field 'block_size': must be at least 8, got 4"),
        ("max_documents = 0", "field 'max_documents': must be at least 1, got 0"),
    ],
)
def test_out_of_range(specs, setting, message):
    line = specs.problem(f'[stages.pretrain]\nkind = "pretrain"\n{setting}\n')
    assert line.endswith(f"stage 'pretrain', {message}"), line


# Bad references: the stage table, and what the problem's line ends with.
@pytest.mark.parametrize(
    ("text", "ending"),
    [
        pytest.param(
            '[stages.pretrain]\nkind = "pretrain"\ndata = "builtin:llama-4m"\n',
            "stage 'pretrain', field 'data': builtin:llama-4m is a model, "
            f"expected one of the built-in data sets: {DATA_SETS}",
            id="builtin_from_the_wrong_section",
        ),
        pytest.param(
            """
            [stages.a]
            kind = "pretrain"
            [stages.b]
            kind = "pretrain"
            from = "x"
            """,
            "stage 'b', field 'from': unknown stage 'x' (stages in this file: a, b)",
            id="unknown_stage_lists_the_stages",
        ),
        pytest.param(
            '[stages.a]\nkind = "pretrain"\nfrom = "a"\n',
            "stage 'a', field 'from': stage 'a' cannot use its own output; "
            "name another stage, builtin:NAME, a path or a hub id",
            id="stage_referencing_itself",
        ),
    ],
)
def test_bad_reference_line_ends(specs, text, ending):
    line = specs.problem(text)
    assert line.endswith(ending), line


# Bad references: the stage table, and what the problem's line says (each part).
@pytest.mark.parametrize(
    ("text", "parts"),
    [
        pytest.param(
            '[stages.pretrain]\nkind = "pretrain"\nfrom = "bpe-4k"\n',
            ["field 'from': builtin:bpe-4k is a tokenizer, expected one of the built-in models"],
            id="bare_builtin_from_the_wrong_section",
        ),
        pytest.param(
            '[stages.pretrain]\nkind = "pretrain"\nfrom = "builtin:llama-5m"\n',
            [
                "field 'from': unknown built-in 'llama-5m' (built-in models: llama-1m, llama-4m, llama-10m)",
                "did you mean 'builtin:llama-",
            ],
            id="unknown_builtin",
        ),
        pytest.param(
            """
            [stages.pretrain]
            kind = "pretrain"
            [stages.more]
            kind = "pretrain"
            from = "pretrian"
            """,
            ["unknown stage 'pretrian' (stages in this file: pretrain, more); did you mean 'pretrain'?"],
            id="unknown_stage_suggests_a_close_name",
        ),
        pytest.param(
            '[stages.pretrain]\nkind = "pretrain"\ndata = "stdlib-doc"\n',
            ["did you mean 'builtin:stdlib-docs'?"],
            id="unknown_stage_suggests_a_builtin",
        ),
        pytest.param(
            '[stages.a]\nkind = "pretrain"\nfrom = "stage:zzz"\n',
            ["field 'from': unknown stage 'zzz' (stages in this file: a)"],
            id="explicit_stage_scheme_checked_too",
        ),
        pytest.param(
            '[stages.a]\nkind = "pretrain"\nfrom = "hf:not a hub id"\n',
            ["field 'from': 'not a hub id' is not a hub id; expected org/name"],
            id="hub_id_must_be_well_formed",
        ),
        pytest.param(
            '[stages.a]\nkind = "pretrain"\nfrom = "s3://bucket/model"\n',
            ["field 'from': unknown reference scheme 's3:'", "expected a stage name"],
            id="unknown_reference_scheme",
        ),
        pytest.param(
            '[stages.a]\nkind = "pretrain"\ndata = ""\n',
            ["field 'data': expected a stage name", "got an empty string"],
            id="empty_reference",
        ),
        pytest.param(
            """
            [stages.a]
            kind = "pretrain"
            from = "b"
            [stages.b]
            kind = "pretrain"
            from = "a"
            """,
            ["stage 'a', field 'from': stages a -> b -> a form a cycle"],
            id="two_stage_cycle",
        ),
        pytest.param(
            """
            [stages.ok]
            kind = "pretrain"
            [stages.x]
            kind = "pretrain"
            tokenizer = "z"
            [stages.y]
            kind = "pretrain"
            from = "x"
            [stages.z]
            kind = "pretrain"
            from = "ok"
            tokenizer = "y"
            """,
            ["stage 'x', field 'tokenizer': stages x -> z -> y -> x form a cycle"],
            id="longer_cycle_through_other_fields",
        ),
    ],
)
def test_bad_reference_line_says(specs, text, parts):
    line = specs.problem(text)
    for part in parts:
        assert part in line, line


def test_missing_local_file(specs):
    line = specs.problem('[stages.pretrain]\nkind = "pretrain"\ndata = "./corpus.txt"\n')
    assert line.endswith(
        f"stage 'pretrain', field 'data': no such file or folder: {specs.root / 'corpus.txt'} "
        f"(relative paths start at {specs.root})"
    )


def test_missing_file_by_extension_alone(specs):
    line = specs.problem('[stages.pretrain]\nkind = "pretrain"\ndata = "corpus.jsonl"\n')
    assert f"field 'data': no such file or folder: {specs.root / 'corpus.jsonl'}" in line


def test_missing_absolute_path(specs, tmp_path):
    line = specs.problem(f'[stages.pretrain]\nkind = "pretrain"\ndata = "{tmp_path}/gone"\n')
    assert line.endswith(f"field 'data': no such file or folder: {tmp_path}/gone")


def test_cycle_reported_even_when_a_stage_in_it_has_other_problems(specs):
    problems = specs.problems(
        """
        [stages.a]
        kind = "pretrain"
        from = "b"
        max_steps = -1
        [stages.b]
        kind = "pretrain"
        from = "a"
        """
    )
    assert len(problems) == 2
    assert "field 'max_steps'" in problems[0]
    assert "stages a -> b -> a form a cycle" in problems[1]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('name = "my run"', "field 'name': expected a run name of letters"),
        ('name = "123"', "field 'name': expected a run name of letters"),
        ("name = 3", "field 'name': expected a run name (a string), got the integer 3"),
        ("description = 3", "field 'description': expected a string, got the integer 3"),
    ],
)
def test_bad_top_level_values(specs, setting, message):
    path = specs.write(f"{setting}\n{VALID_STAGE}")
    line = specs.problem(f"{setting}\n{VALID_STAGE}")
    assert line.startswith(f"{path}: {message}"), line


def test_all_problems_collected_in_file_order(specs, monkeypatch):
    path = specs.write("")
    if not STILL_PLANNED:  # every announced kind has arrived: announce one for this test
        monkeypatch.setattr("engine.stages.registry.PLANNED_KINDS", ("later",))
    planned = STILL_PLANNED[-1] if STILL_PLANNED else "later"  # a kind announced but not available yet
    coming = COMING or "later"
    problems = specs.problems(
        f"""
        nmae = "x"
        [stages.a]
        kind = "pretrain"
        max_step = 3
        learning_rate = 0
        data = "builtin:llama-4m"
        [stages.b]
        kind = "{planned}"
        [stages.c]
        from = "a"
        [stages.d]
        kind = "pretrain"
        from = "nope"
        max_steps = "100"
        """
    )
    assert problems == [
        f"{path}: unknown top-level key 'nmae'; did you mean 'name'? "
        "(allowed: name, description, defaults, stages; stage settings go in [stages.NAME])",
        f"{path}: stage 'a', field 'max_step': unknown field for a pretrain stage; did you mean 'max_steps'?",
        f"{path}: stage 'a', field 'learning_rate': must be greater than 0, got 0",
        f"{path}: stage 'a', field 'data': builtin:llama-4m is a model, "
        f"expected one of the built-in data sets: {DATA_SETS}",
        f"{path}: stage 'b', field 'kind': kind '{planned}' is not available in this version "
        f"(coming: {coming})",
        f"{path}: stage 'c', field 'kind': missing; expected one of the stage kinds: {KNOWN}",
        f"{path}: stage 'd', field 'from': unknown stage 'nope' (stages in this file: a, b, c, d)",
        f"{path}: stage 'd', field 'max_steps': expected an integer, got the string '100'",
    ]


def test_rejection_writes_nothing(specs, tmp_path):
    specs.write('[stages.a]\nkind = "pretrain"\nmax_steps = 0\n')
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SpecError):
        load_spec(tmp_path / "pipeline.toml")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_parse_spec_uses_source_in_messages(tmp_path):
    with pytest.raises(SpecError) as info:
        parse_spec("[stages]\n", source="<console form>", base_dir=tmp_path)
    assert info.value.problems[0].startswith("<console form>: ")


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_numbers(specs, value):
    line = specs.problem(f'[stages.pretrain]\nkind = "pretrain"\nmax_grad_norm = {value}\n')
    assert line.endswith(f"stage 'pretrain', field 'max_grad_norm': expected a finite number, got {value}")
