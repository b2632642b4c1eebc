"""The console's layering, read from its source (issue 12, item 4).

- Screens and widgets never import `console.app`: they see the app as the
  `ConsoleShell` protocol (console/shell.py), so there is no import circle.
- The console imports the store only through its package (`store`, whose read
  types it uses, and `store.reads`, the read API), never its internals.
- The console never calls a write of the store: judgements, claims, runs and
  the rest change through the engine (`Engine`, `Engine.annotation`).
- Screens and widgets never start or stop a run through the engine
  themselves: they ask the app (`ConsoleShell.start_run`, `cancel_run`, ...),
  which does it with its confirmations and error handling.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONSOLE = Path(__file__).resolve().parents[2] / "console"
MODULES = sorted(CONSOLE.rglob("*.py"))

#: the store's public modules a front end may import from
STORE_MODULES_ALLOWED = {"store", "store.reads"}
#: methods of Store, Feedback and RewardScores that change the database
STORE_WRITES = {
    "create_run", "update_run", "set_run_status_if", "heartbeat", "update_stage", "add_metrics", "add_logs",
    "add_event", "add_checkpoint", "remove_checkpoints", "add_artifact", "add_prompts", "create_sample_batch",
    "add_samples", "add_items", "items_from_batch", "next_item", "release", "import_batch", "judge", "undo",
    "comment", "add_scores",
}
#: methods of Engine that change a run: a screen asks the app (ConsoleShell) instead
ENGINE_RUN_ACTIONS = {"submit", "cancel", "resume", "next_round"}


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Absolute names of every module imported anywhere in the file (type-checking blocks too)."""
    package = module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def _name(node: ast.expr) -> str | None:
    """`store` for `store`, `self.store` or `engine.store`: what an attribute is read from."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(CONSOLE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CONSOLE)))
def test_console_module_keeps_to_its_layer(path: Path) -> None:
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = _imports(tree, module)
    if module.startswith(("console.screens.", "console.widgets.")):
        assert "console.app" not in imported, f"{module} imports console.app (use console.shell.ConsoleShell)"
        actions = {f"engine.{node.attr}" for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and node.attr in ENGINE_RUN_ACTIONS
                   and _name(node.value) == "engine"}
        assert not actions, f"{module} calls {sorted(actions)}: ask the app (ConsoleShell) instead"
    store_internals = {name for name in imported if name.split(".")[0] == "store"} - STORE_MODULES_ALLOWED
    assert not store_internals, f"{module} imports store internals {sorted(store_internals)}"
    writes = {f"{_name(node.value)}.{node.attr}" for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and node.attr in STORE_WRITES
              and _name(node.value) in ("store", "feedback", "scores")}
    assert not writes, f"{module} calls store writes {sorted(writes)}: go through the engine"


def test_the_layering_check_sees_every_console_module() -> None:
    assert len(MODULES) > 20 and CONSOLE / "app.py" in MODULES
