"""What the machine is doing: CPU, memory and, per GPU, utilisation and memory.

Textual-free. GPUs are read through NVML (`pynvml`, from the nvidia-ml-py
package) when it is importable, else through `nvidia-smi --query-gpu` when
that command exists, else the machine has no GPUs we can see. Sampling is
cheap but not free (nvidia-smi is a process start): call `sample()` off the
event loop. Tests and snapshots pass a fake with fixed numbers instead.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import psutil


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    name: str
    utilization: float | None  # percent, None when the driver does not say
    memory_used: int  # bytes
    memory_total: int  # bytes


@dataclass(frozen=True)
class SystemSnapshot:
    cpu_percent: float  # all cores, 0-100
    cpu_count: int
    memory_used: int  # bytes
    memory_total: int  # bytes
    gpus: Sequence[GpuSnapshot] = field(default_factory=tuple)
    gpu_source: str = "none"  # nvml, nvidia-smi or none
    gpu_error: str | None = None  # why GPUs could not be read, if they could not


class SystemSampler(Protocol):
    def sample(self) -> SystemSnapshot: ...


class LocalSampler:
    """This machine, through psutil and NVML or nvidia-smi."""

    def __init__(self) -> None:
        self._gpus = _gpu_reader()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def sample(self) -> SystemSnapshot:
        memory = psutil.virtual_memory()
        gpus: Sequence[GpuSnapshot] = ()
        error = None
        try:
            gpus = self._gpus.read()
        except Exception as exc:  # noqa: BLE001  a broken driver must not take the console down
            error = f"{type(exc).__name__}: {exc}"
        return SystemSnapshot(
            cpu_percent=psutil.cpu_percent(interval=None),
            cpu_count=psutil.cpu_count() or 1,
            memory_used=memory.total - memory.available,
            memory_total=memory.total,
            gpus=tuple(gpus),
            gpu_source=self._gpus.source,
            gpu_error=error,
        )


# --- GPUs ---------------------------------------------------------------------


class _NoGpus:
    source = "none"

    def read(self) -> Sequence[GpuSnapshot]:
        return ()


class _Nvml:
    source = "nvml"

    def __init__(self, pynvml: object) -> None:
        self.nvml = pynvml
        self.nvml.nvmlInit()  # type: ignore[attr-defined]

    def read(self) -> Sequence[GpuSnapshot]:
        nvml = self.nvml
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):  # type: ignore[attr-defined]
            handle = nvml.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
            name = nvml.nvmlDeviceGetName(handle)  # type: ignore[attr-defined]
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)  # type: ignore[attr-defined]
            try:
                utilization: float | None = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001  some GPUs (MIG slices) do not report it
                utilization = None
            gpus.append(GpuSnapshot(
                index=index,
                name=name.decode() if isinstance(name, bytes) else str(name),
                utilization=utilization,
                memory_used=int(memory.used),
                memory_total=int(memory.total),
            ))
        return gpus


class _NvidiaSmi:
    source = "nvidia-smi"
    QUERY = "index,name,utilization.gpu,memory.used,memory.total"

    def __init__(self, command: str) -> None:
        self.command = command

    def read(self) -> Sequence[GpuSnapshot]:
        output = subprocess.run(
            [self.command, f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
        return parse_nvidia_smi(output)


def parse_nvidia_smi(output: str) -> list[GpuSnapshot]:
    """Rows of `nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total
    --format=csv,noheader,nounits` (memory in MiB; "[N/A]" where unknown)."""
    mib = 1024 * 1024
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        index, name, util, used, total = parts[0], ", ".join(parts[1:-3]), *parts[-3:]
        gpus.append(GpuSnapshot(
            index=_number(index, int) or 0,
            name=name,
            utilization=_number(util, float),
            memory_used=int((_number(used, float) or 0) * mib),
            memory_total=int((_number(total, float) or 0) * mib),
        ))
    return gpus


_Number = TypeVar("_Number", int, float)


def _number(text: str, kind: type[_Number]) -> _Number | None:
    try:
        return kind(text)
    except ValueError:
        return None


def _gpu_reader() -> _NoGpus | _Nvml | _NvidiaSmi:
    try:
        import pynvml  # nvidia-ml-py; optional

        return _Nvml(pynvml)
    except Exception:  # noqa: BLE001  not installed, or no driver: try the command
        pass
    command = shutil.which("nvidia-smi")
    return _NvidiaSmi(command) if command else _NoGpus()


# --- words ----------------------------------------------------------------------


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as `free` and nvidia-smi use."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
