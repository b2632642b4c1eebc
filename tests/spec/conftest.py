from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec import PipelineSpec, load_spec


class SpecFiles:
    """Writes spec files into a temporary folder and loads them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, text: str, name: str = "pipeline.toml") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def load(self, text: str, name: str = "pipeline.toml") -> PipelineSpec:
        return load_spec(self.write(text, name))

    def problems(self, text: str, name: str = "pipeline.toml") -> list[str]:
        """The problem lines of a spec that must be rejected."""
        with pytest.raises(SpecError) as info:
            self.load(text, name)
        error = info.value
        assert error.exit_code == 2
        assert error.problems, "a SpecError without problems"
        for line in error.problems:
            assert "\n" not in line, f"problem is not one line: {line!r}"
        assert str(error) == "\n".join(error.problems)
        return error.problems

    def problem(self, text: str, name: str = "pipeline.toml") -> str:
        """The one problem line of a spec that must be rejected for one reason."""
        problems = self.problems(text, name)
        assert len(problems) == 1, problems
        return problems[0]


@pytest.fixture
def specs(tmp_path: Path) -> SpecFiles:
    return SpecFiles(tmp_path)


@pytest.fixture(autouse=True)
def only_builtin_stage_kinds():
    """Messages list the known kinds; plugins other tests registered (the fake
    stage) must not change them."""
    from engine.stages import registry

    plugins = {kind: entry for kind, entry in registry.stage_kinds().items() if not registry.is_builtin(kind)}
    for kind in plugins:
        registry.unregister_stage(kind)
    yield
    for kind, entry in plugins.items():
        registry.register_stage(kind, entry.spec, entry.module)
