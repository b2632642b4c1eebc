"""A stage's output when nobody reads its pipes any more.

A stage writes its stdout and stderr into pipes its run process reads
(engine/runtime/log_capture.py). When the run process dies (kill -9), the
stage is meant to notice, stop at its next step and save a checkpoint
(engine/runtime/worker.py). But the first `print` after that death raised
BrokenPipeError (Python ignores SIGPIPE), which ended the stage before it
could save: a kill -9 of the run process lost every step since the last
periodic checkpoint. So the worker's sys.stdout and sys.stderr go through
this: on a broken pipe, what follows is appended to the stage's log file
itself, where the run process would have written it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TextIO


class OrphanSafeStream:
    """`stream`, until writing to it meets a broken pipe; then `log_file`, appended."""

    def __init__(self, stream: TextIO, log_file: Path) -> None:
        self._stream = stream
        self._log_file = log_file
        self._fallback: TextIO | None = None

    def write(self, text: str) -> int:
        if self._fallback is None:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed meanwhile
                self._switch()
        return self._fallback.write(text) if self._fallback is not None else len(text)

    def flush(self) -> None:
        if self._fallback is None:
            try:
                self._stream.flush()
                return
            except (BrokenPipeError, ValueError):
                self._switch()
        if self._fallback is not None:
            with contextlib.suppress(OSError):
                self._fallback.flush()

    def _switch(self) -> None:
        try:
            self._fallback = self._log_file.open("a", encoding="utf-8", buffering=1)
        except OSError:
            self._fallback = None  # nowhere to write: lose the text, never the stage

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)  # fileno, isatty, encoding, ...: the original's


__all__ = ["OrphanSafeStream"]
