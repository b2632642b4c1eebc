"""Fixtures and settings shared by every test package.

`builtin_cache` is the one cache of built-in tokenizers and corpora for the
whole session: building `builtin:stdlib-docs` and `builtin:bpe-4k` takes
about 6 s on 2 cores, and the stage tests, the end-to-end runs (through
RLHF_CACHE_DIR) and the demo all read the same deterministic files.

The suite runs on pytest-xdist workers (`-n auto --dist worksteal`, set in
pyproject.toml). Two things make that pay on a small machine:

- the cores are shared out: each worker, and every stage process its tests
  start, gets `cores // workers` threads (OMP_NUM_THREADS, read by torch when
  it is first imported), so two workers on two cores do not each spin two
  threads against the other's;
- the longest tests are collected first: the end-to-end demo alone is about
  7 minutes, so it must start at once, while the other worker works through
  the rest and steals from the first one's queue.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    # Before any test module imports torch: this conftest is loaded first.
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

#: test files that take minutes, longest first: they start before anything else
LONGEST_FIRST = ("test_e2e_demo.py", "test_e2e_pretrain.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first, then the other slow tests, then the rest (each group in collection order)."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # sort is stable: within a group, the order pytest collected


@pytest.fixture(scope="session")
def builtin_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache folder for built-in tokenizers and corpora (built on first use)."""
    return tmp_path_factory.mktemp("builtin-cache")
