"""`rlhf completion bash|zsh`: shell completion scripts, generated from the parser by shtab.

shtab reads the argparse parser as it is (commands, options, choices) and writes
a completion script for the shell; nothing here describes the commands twice.
It is imported only when a script is asked for. Arguments that name files or
folders carry shtab's hints (`action.complete`), copied below so that building
the parser, which every `rlhf` command does, never imports shtab.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh")

# shtab.FILE and shtab.DIRECTORY (shtab 1.x), for the shells we generate scripts for.
_FILE = {"bash": "_shtab_compgen_files", "zsh": "_files"}
_DIRECTORY = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/"}


def completes_files(action: argparse.Action) -> argparse.Action:
    """Mark an argument whose value is a file: the shell completes paths for it."""
    setattr(action, "complete", _FILE)  # noqa: B010  shtab reads this attribute; Action declares none
    return action


def completes_folders(action: argparse.Action) -> argparse.Action:
    """Mark an argument whose value is a folder."""
    setattr(action, "complete", _DIRECTORY)  # noqa: B010  as above
    return action


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    import shtab

    script: str = shtab.complete(parser, shell=shell)
    return script
