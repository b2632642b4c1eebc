"""The example `rlhf init` writes: valid, and showing every field with its help."""

from __future__ import annotations

import re
import tomllib

from engine.spec import EXAMPLE_SPEC, PretrainSpec, load_spec


def test_template_loads(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text(EXAMPLE_SPEC)
    spec = load_spec(path)
    assert list(spec.stages) == ["pretrain"]
    assert spec.stages["pretrain"] == PretrainSpec()  # every value shown is the default
    assert spec.description


def test_template_shows_every_field_with_its_default_and_help():
    table = tomllib.loads(EXAMPLE_SPEC)["stages"]["pretrain"]
    lines = EXAMPLE_SPEC.splitlines()
    for name, field in PretrainSpec.model_fields.items():
        key = field.alias or name
        default = field.get_default(call_default_factory=True)
        if default is None:
            # TOML has no null: an unset field is shown commented out
            pattern = re.compile(rf"^# {re.escape(key)} = ")
            assert key not in table
        else:
            pattern = re.compile(rf"^{re.escape(key)} = ")
            assert table[key] == default, key
        found = [i for i, line in enumerate(lines) if pattern.match(line)]
        assert len(found) == 1, f"{key} is not shown once in the template"
        if key == "kind":
            continue
        comment = lines[found[0] - 1]  # the help sits on the line above
        assert comment.startswith("# ") and len(comment) > 4, f"{key} has no help comment"
        if field.description:
            assert field.description in comment, f"{key}: comment is not the field's description"
