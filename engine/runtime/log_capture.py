"""Everything a stage process prints goes to the run's log, never to a terminal.

One reader thread per stream (stdout, stderr) collects lines; they are
written to the store in batches (at most one transaction per FLUSH_SECONDS)
and to a plain log file beside the stage's outputs, for `tail -f` people.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import IO

from store import Store, utcnow

FLUSH_SECONDS = 0.5
MAX_LINE = 8192  # a single runaway line (a tensor dump) must not bloat the store


class LogCapture:
    def __init__(self, *, store: Store, run_id: int, stage_id: int | None, log_file: Path) -> None:
        self._store = store
        self._run_id = run_id
        self._stage_id = stage_id
        self._file = open(log_file, "a", encoding="utf-8")  # noqa: SIM115
        self._pending: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._done = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, daemon=True)
        self._flusher.start()

    def attach(self, stream: IO[bytes], name: str) -> None:
        reader = threading.Thread(target=self._read, args=(stream, name), daemon=True)
        reader.start()
        self._readers.append(reader)

    def _read(self, stream: IO[bytes], name: str) -> None:
        level = "warning" if name == "stderr" else "info"
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            # A carriage-return redraw keeps only what was finally shown.
            text = text.rsplit("\r", 1)[-1]
            if not text.strip():
                continue
            if len(text) > MAX_LINE:
                text = text[:MAX_LINE] + f"... [{len(text) - MAX_LINE} more characters]"
            with self._lock:
                self._pending.append(
                    {"run_id": self._run_id, "stage_id": self._stage_id, "stream": name,
                     "level": level, "message": text, "time": utcnow()}
                )
        stream.close()

    def _flush_periodically(self) -> None:
        while not self._done.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return
        for line in lines:
            self._file.write(f"{line['time']:%H:%M:%S} {line['stream']}: {line['message']}\n")
        self._file.flush()
        with contextlib.suppress(Exception):  # the file still has them; never kill the run over logs
            self._store.add_logs(lines)

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        self._done.set()
        self._flusher.join(timeout)
        self.flush()
        self._file.close()
