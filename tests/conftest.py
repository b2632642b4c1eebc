"""Fixtures shared by every test package.

`builtin_cache` is the one cache of built-in tokenizers and corpora for the
whole session: building `builtin:stdlib-docs` and `builtin:bpe-4k` takes
about 6 s on 2 cores, and the stage tests, the end-to-end runs (through
RLHF_CACHE_DIR) and the demo all read the same deterministic files.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def builtin_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache folder for built-in tokenizers and corpora (built on first use)."""
    return tmp_path_factory.mktemp("builtin-cache")
