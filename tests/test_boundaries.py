"""The process model's contracts, checked in fresh interpreters (static checks miss deferred imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import engine",
        "import console, console.cli",
        "import console.cli; console.cli.build_parser()",
        # The whole path of `rlhf ls`: parse, open a workspace, list runs.
        "import tempfile, console.cli; console.cli.main(['-w', tempfile.mkdtemp(), 'ls'])",
        "import engine.runtime.supervisor",
    ],
)
def test_front_ends_and_the_run_process_stay_torch_free(code: str) -> None:
    leaked = imported_after(code) & set(HEAVY)
    assert not leaked, f"`{code}` imported {sorted(leaked)}"


def test_store_imports_no_other_package_of_ours() -> None:
    modules = imported_after("import store, store.workspace, store.repository")
    assert not {m for m in modules if m.split(".")[0] in ("engine", "console")}


def test_engine_never_imports_the_console_or_textual() -> None:
    modules = imported_after("import engine, engine.runtime.supervisor, engine.runtime.worker, engine.runtime.api")
    assert not {m for m in modules if m.split(".")[0] in ("console", "textual")}
