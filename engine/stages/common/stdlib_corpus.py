"""The `stdlib-docs` corpus: English docstrings of the Python standard library.

Every machine with Python has about a megabyte of well-written English in the
standard library's docstrings, which is enough to train a tiny tokenizer and
watch a tiny model learn. The docstrings are read from the source files with
`ast`, never by importing the modules: importing runs their code (`antigravity`
opens a web browser, `this` prints a poem) and would make the corpus depend on
which optional extensions happen to import.

Only the standard library is used here, so building the corpus loads no
third-party package either.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

from store.permissions import file_mode

NAME = "stdlib-docs"

# Resolved on import: sysconfig reads its data module (_sysconfigdata_*) the first
# time it is asked, and reading docstrings is to import nothing at all.
_STDLIB_DIR = sysconfig.get_paths()["stdlib"]

#: Docstrings shorter than this are mostly one-liners ("Return self==value."):
#: too short to teach anything about English and heavily repeated.
MIN_CHARS = 80
#: Enough text for a tiny model, small enough to build in a couple of seconds.
MAX_CHARS = 3_000_000

# Folders that hold tests, third-party packages or GUI demo code rather than
# library documentation. Any folder whose name starts with "test" is skipped too.
_SKIPPED_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        "idlelib",
        "lib2to3",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "pydoc_data",
    }
)
_DOCUMENTED_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_Documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def corpus_path(cache_dir: Path) -> Path:
    """Where the built corpus lives: one JSON object `{"text": ...}` per line."""
    return Path(cache_dir) / "corpora" / f"{NAME}.jsonl"


def load_stdlib_docs(cache_dir: Path) -> list[str]:
    """The corpus as a list of documents, built into the cache on first use."""
    path = ensure_stdlib_docs(cache_dir)
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


def ensure_stdlib_docs(cache_dir: Path) -> Path:
    """Build the cached corpus file unless it exists; return its path."""
    path = corpus_path(cache_dir)
    if not path.exists():
        docs = stdlib_docstrings()
        _write_atomically(path, "".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def stdlib_docstrings(
    stdlib_dir: Path | None = None, *, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS
) -> list[str]:
    """Cleaned, de-duplicated docstrings in a fixed order (sorted files, source order within a file)."""
    root = Path(stdlib_dir or _STDLIB_DIR)
    seen: set[str] = set()
    docs: list[str] = []
    total = 0
    for source_file in _library_sources(root):
        for doc in _docstrings_in(source_file):
            if len(doc) < min_chars or doc in seen:
                continue
            seen.add(doc)
            docs.append(doc)
            total += len(doc)
            if total >= max_chars:
                return docs
    return docs


def _library_sources(root: Path) -> Iterator[Path]:
    """The library's .py files in sorted order, tests and bundled packages left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorting in place fixes the order os.walk descends in: same corpus on every run.
        dirnames[:] = sorted(d for d in dirnames if not _skipped_dir(d))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test"):
                yield Path(dirpath) / name


def _skipped_dir(name: str) -> bool:
    return name in _SKIPPED_DIRS or name.startswith(("test", "."))


def _docstrings_in(source_file: Path) -> Iterator[str]:
    try:
        # Bytes, so that ast honours each file's own encoding declaration.
        tree = ast.parse(source_file.read_bytes(), filename=str(source_file))
    except (SyntaxError, ValueError, RecursionError, OSError):
        return  # a file this Python cannot parse is simply not part of the corpus
    for node in _in_source_order(tree):
        doc = ast.get_docstring(node, clean=False)
        if doc:
            yield inspect.cleandoc(doc)


def _in_source_order(tree: ast.AST) -> Iterator[_Documented]:
    """Modules, classes and functions, depth first (ast.walk is breadth first).

    Expressions are not descended into: no def or class can hide in one, and
    they are most of a syntax tree's nodes."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DOCUMENTED_NODES):
            yield node
        children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.expr)]
        stack.extend(reversed(children))


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place.

    Readers never see a half-written file, and when two processes build the
    corpus at once the second rename replaces an identical file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, file_mode())  # mkstemp makes it private; the cache is shared like any output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
