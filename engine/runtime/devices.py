"""Device slots: runs queue for devices instead of fighting over them.

Each device is a lock file in the workspace (`locks/cpu-0.lock`,
`locks/cuda-0.lock`); a stage holds `fcntl.flock` on the slots it uses while
it runs. The kernel drops a dead process's locks, so a run killed with -9
never leaves a device blocked. Waiting runs take free slots in submission
order (lowest run id first), so on a CPU box runs go one at a time and on a
GPU box one stage per GPU.

Torch-free: GPUs are found with `nvidia-smi`, honouring CUDA_VISIBLE_DEVICES,
or set explicitly with RLHF_DEVICES ("cpu", "cuda:0,cuda:1", or a GPU count).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "cuda"
    index: int

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.index}"


@cache
def visible_gpus() -> tuple[int, ...]:
    """Indices of the GPUs this process may use (as CUDA numbers them)."""
    configured = os.environ.get("RLHF_DEVICES")
    if configured:
        configured = configured.strip()
        if configured == "cpu":
            return ()
        if configured.isdigit():
            return tuple(range(int(configured)))
        return tuple(int(part.split(":")[-1]) for part in configured.split(",") if part.strip())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(range(len([v for v in visible.split(",") if v.strip()])))
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


def cpu_slots() -> int:
    """How many CPU stages may run at once (default 1: training uses every core)."""
    return max(1, int(os.environ.get("RLHF_CPU_SLOTS", "1")))


def devices_for(device: str, processes: int) -> tuple[str, int]:
    """The device kind a stage runs on and how many slots of it it needs."""
    gpus = visible_gpus()
    if device == "cuda" or (device == "auto" and gpus):
        return "cuda", processes
    # All CPU processes of a stage share the machine: one CPU slot.
    return "cpu", 1


def slot_count(kind: str) -> int:
    return len(visible_gpus()) if kind == "cuda" else cpu_slots()


@dataclass
class SlotLease:
    """Slots held by one stage; released by `release()` or by process exit."""

    devices: list[Device]
    _files: list[IO[bytes]] = field(default_factory=list, repr=False)

    def hold(self, device: Device, handle: IO[bytes]) -> None:
        """Add a slot whose lock file `handle` holds locked; the lease closes it on release."""
        self.devices.append(device)
        self._files.append(handle)

    def release(self) -> None:
        for handle in self._files:
            try:
                fcntl.flock(handle, fcntl.LOCK_UN)
            finally:
                handle.close()
        self._files.clear()

    @property
    def names(self) -> str:
        return ",".join(d.name for d in self.devices)


def try_acquire(locks_dir: Path, kind: str, count: int) -> SlotLease | None:
    """Take `count` free slots of a kind without blocking, or none at all."""
    total = slot_count(kind)
    if count > total:
        raise ValueError(f"needs {count} {kind} device(s), this machine has {total}")
    locks_dir.mkdir(parents=True, exist_ok=True)
    lease = SlotLease(devices=[])
    for index in range(total):
        handle = open(locks_dir / f"{kind}-{index}.lock", "ab")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        lease.hold(Device(kind, index), handle)
        if len(lease.devices) == count:
            return lease
    lease.release()
    return None
