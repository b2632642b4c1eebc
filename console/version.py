"""`rlhf --version`: this package's version and the libraries' a bug report needs.

Read from the installed distributions' metadata (importlib.metadata), never by
importing them: printing a version must not cost torch's seconds of import.
"""

from __future__ import annotations

import platform
from importlib import metadata

DISTRIBUTION = "rlhf-console"
#: the libraries whose versions decide how a stage trains
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate")


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def version_text() -> str:
    """`rlhf 0.1.0 (torch 2.13.0, transformers 5.24.0, ...; Python 3.11.9)`."""
    own = installed_version(DISTRIBUTION) or "(not installed: run from a source folder)"
    libraries = ", ".join(f"{name} {installed_version(name) or 'not installed'}" for name in LIBRARIES)
    return f"rlhf {own} ({libraries}; Python {platform.python_version()})"
