"""The import boundaries of the process model (ARCHITECTURE.md, "Import rules").

The static rules (store imports nothing of ours; engine never the console or textual; the console
and the engine's torch-free parts never torch and friends; console > engine > store; no stage kind
imports another's run code) are import-linter contracts in pyproject.toml, checked here by running
`lint-imports`. Static analysis misses modules imported by name at run time (the worker loads a
stage kind's module through the registry, judges load by name), so what a process really imports
is also checked here, in fresh interpreters, through sys.modules after doing real work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The ML libraries only worker processes may load (datasets too: it costs a second to import).
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def modules_imported_by(code: str, cwd: Path) -> set[str]:
    """Run `code` in a new interpreter (in `cwd`, with the repository on the path) and return
    every module it left in sys.modules."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


LOAD_A_SPEC_AND_LIST_RUNS = """
import pathlib, store
from engine.spec import EXAMPLE_SPEC, load_spec
folder = pathlib.Path.cwd()
(folder / "pipeline.toml").write_text(EXAMPLE_SPEC)
load_spec(folder / "pipeline.toml")
workspace = store.open_workspace(folder / "ws")
workspace.store.list_runs()
workspace.close()
"""


def top_level_packages_imported_by(code: str, cwd: Path) -> set[str]:
    return {name.split(".")[0] for name in modules_imported_by(code, cwd)}


@pytest.mark.parametrize(
    "code",
    [
        "import engine",
        "import console.app",
        "import console, console.cli",
        "import console.cli; console.cli.build_parser()",
        # The whole path of `rlhf ls`: parse, open a workspace, list runs.
        "import tempfile, console.cli; console.cli.main(['-w', tempfile.mkdtemp(), 'ls'])",
        # The detached run process: it spawns stage workers and must not pay for torch itself.
        "import engine.runtime.supervisor",
        LOAD_A_SPEC_AND_LIST_RUNS,
    ],
    ids=["engine", "console.app", "console.cli", "build_parser", "rlhf-ls", "supervisor", "load-spec-list-runs"],
)
def test_the_console_process_and_the_run_process_stay_torch_free(code: str, tmp_path: Path) -> None:
    leaked = top_level_packages_imported_by(code, tmp_path) & set(HEAVY)
    assert not leaked, f"`{code}` imported {sorted(leaked)}"


def test_the_engine_processes_never_load_the_console_or_textual(tmp_path: Path) -> None:
    code = "import engine, engine.runtime.supervisor, engine.runtime.worker, engine.runtime.api"
    leaked = top_level_packages_imported_by(code, tmp_path) & {"console", "textual"}
    assert not leaked, f"the engine imported {sorted(leaked)}"


FEEDBACK_ROUND_TRIP = """
import pathlib
from engine.feedback import (Judgement, Response, preference_pairs, unpaired_examples, write_trl,
                             write_judgements, read_feedback, agreement_from_judgements, leaderboard,
                             games_from_judgements)
folder = pathlib.Path.cwd()
j = Judgement("k", "p", (Response("a", "x", "m1"), Response("b", "y", "m2")), "a_better", annotator="u")
read_feedback(write_trl(preference_pairs([j]), folder / "p.jsonl"))
read_feedback(write_judgements([j], folder / "j.csv"))
unpaired_examples([j]); agreement_from_judgements([j]); leaderboard(games_from_judgements([j]), rounds=5)
"""


def test_the_feedback_logic_imports_no_ml_library_nor_pyarrow(tmp_path: Path) -> None:
    # pyarrow is loaded only when a parquet file is read or written; jsonl and csv do without it.
    leaked = top_level_packages_imported_by(FEEDBACK_ROUND_TRIP, tmp_path) & {*HEAVY, "pyarrow"}
    assert not leaked, f"the feedback round trip imported {sorted(leaked)}"


def lint_imports_command() -> str | None:
    """The `lint-imports` beside this interpreter (the project's venv), else one on PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def test_the_import_contracts_hold() -> None:
    command = lint_imports_command()
    if command is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
