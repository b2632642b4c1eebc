"""Fixtures for the engine's tests: an engine on a new workspace whose runs use the fake kind.

`engine_env` and `open_engine` (which kills what the runs started) are shared,
in tests/conftest.py; `fake_pipeline` is tests.support.fake_spec, by the name
test_engine imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine
from tests.support import fake_spec as fake_pipeline

from . import fake_stage  # noqa: F401  registers kind "fake" in this process


@pytest.fixture
def engine(tmp_path: Path, engine_env: None, open_engine: Callable[[Path], Engine]) -> Engine:
    return open_engine(tmp_path / "ws")


__all__ = ["fake_pipeline"]
