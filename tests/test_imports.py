"""Import contracts, checked in a fresh interpreter through sys.modules
(static import checks miss imports done inside functions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate")


def heavy_modules_after(code: str, tmp_path: Path) -> list[str]:
    """Run `code` in a new interpreter and list the heavy packages it imported."""
    script = f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_spec_and_store_imports_no_ml_library(tmp_path):
    assert heavy_modules_after("import engine.spec, store", tmp_path) == []


def test_loading_a_spec_and_opening_the_store_imports_no_ml_library(tmp_path):
    code = f"""
import pathlib, store
from engine.spec import EXAMPLE_SPEC, load_spec
path = pathlib.Path({str(tmp_path)!r}) / "pipeline.toml"
path.write_text(EXAMPLE_SPEC)
spec = load_spec(path)
workspace = store.open_workspace(pathlib.Path({str(tmp_path)!r}) / "ws")
workspace.store.list_runs()
workspace.close()
"""
    assert heavy_modules_after(code, tmp_path) == []


def test_store_imports_no_other_project_package(tmp_path):
    code = "import store, sys\nassert not [m for m in sys.modules if m.split('.')[0] in ('engine', 'console')], sorted(sys.modules)"
    heavy_modules_after(code, tmp_path)
