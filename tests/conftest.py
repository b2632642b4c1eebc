"""Fixtures and settings shared by every test package.

`builtin_cache` is the one cache of built-in tokenizers and corpora for the
whole session: building `builtin:stdlib-docs` and `builtin:bpe-4k` takes
about 6 s on 2 cores, and the stage tests, the end-to-end runs (through
RLHF_CACHE_DIR) and the demo all read the same deterministic files.

`workspace` and `store` are a fresh workspace and its store. `engine_env`
points the engine and the processes it starts at the fake stage kind on the
CPU; `offline_cpu_env` runs real stage kinds on the CPU, offline;
`open_engine(root)` gives an Engine whose runs' processes are killed when
the test ends (helpers in tests/support.py). A package's conftest keeps what
only its tests use.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from engine import Engine
    from store import Store, Workspace

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


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A new workspace under the test's tmp_path, closed afterwards."""
    from store import open_workspace

    ws = open_workspace(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def store(workspace: Workspace) -> Store:
    return workspace.store


@pytest.fixture
def engine_cpu_slots() -> int:
    """RLHF_CPU_SLOTS under `engine_env`: how many stages may use the CPU at once."""
    return 1


@pytest.fixture
def engine_env(monkeypatch: pytest.MonkeyPatch, engine_cpu_slots: int) -> None:
    """Runs of the fake kind, on the CPU, with a cancel grace short enough for a test."""
    from tests.support import FAKE_STAGE_PLUGINS

    # Child processes (the run process, its stage workers) inherit these.
    monkeypatch.setenv("RLHF_STAGE_PLUGINS", FAKE_STAGE_PLUGINS)
    monkeypatch.setenv("RLHF_DEVICES", "cpu")
    monkeypatch.setenv("RLHF_CPU_SLOTS", str(engine_cpu_slots))
    monkeypatch.setenv("RLHF_CANCEL_GRACE", "10")


@pytest.fixture
def offline_cpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of real stage kinds (tiny models) on the CPU, never reaching the network."""
    # Child processes (the run process, its stage workers) inherit these.
    monkeypatch.setenv("RLHF_DEVICES", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def open_engine() -> Iterator[Callable[[Path], Engine]]:
    """`open_engine(root)` -> an Engine on that workspace. When the test ends, whatever it
    did, the process trees of its runs are killed and the engine is closed."""
    # Imported here, not at the top: a session of store or spec tests alone need not import the engine.
    from engine import Engine
    from tests.support import end_run_processes

    opened: list[Engine] = []

    def open_(root: Path) -> Engine:
        engine = Engine(root)
        opened.append(engine)
        return engine

    yield open_
    for engine in reversed(opened):
        end_run_processes(engine)
        engine.close()
