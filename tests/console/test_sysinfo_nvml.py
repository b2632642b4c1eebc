"""The GPU panel reads NVML in-process when nvidia-ml-py is installed (the `gpu`
extra), instead of starting nvidia-smi every 2 s (issue 15); a fake pynvml
module stands in for the driver."""

from __future__ import annotations

import shutil
import sys
import types
from types import SimpleNamespace

import pytest

from console.sysinfo import GpuSnapshot, LocalSampler

GIB = 1024**3


def fake_pynvml(*, init_fails: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")

    def init() -> None:
        if init_fails:
            raise RuntimeError("NVML Shared Library Not Found")

    def utilization(handle: int) -> SimpleNamespace:
        if handle == 1:
            raise RuntimeError("Not Supported")  # as a MIG slice answers
        return SimpleNamespace(gpu=37, memory=12)

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    # Older nvidia-ml-py releases return bytes, newer ones str.
    nvml.nvmlDeviceGetName = lambda handle: b"NVIDIA H200" if handle == 0 else "NVIDIA A100 MIG 1g.10gb"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(  # type: ignore[attr-defined]
        used=(handle + 1) * GIB, total=(handle + 1) * 80 * GIB, free=0,
    )
    nvml.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    return nvml


def test_the_gpu_panel_reads_nvml_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    monkeypatch.setattr(shutil, "which", lambda name: pytest.fail(f"{name} looked up although NVML is there"))
    snapshot = LocalSampler().sample()
    assert snapshot.gpu_source == "nvml" and snapshot.gpu_error is None
    assert list(snapshot.gpus) == [
        GpuSnapshot(index=0, name="NVIDIA H200", utilization=37.0, memory_used=GIB, memory_total=80 * GIB),
        GpuSnapshot(index=1, name="NVIDIA A100 MIG 1g.10gb", utilization=None, memory_used=2 * GIB,
                    memory_total=160 * GIB),
    ]


def test_without_a_driver_nvml_gives_way_to_nvidia_smi_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_fails=True))
    monkeypatch.setattr(shutil, "which", lambda name: None)  # and no nvidia-smi either
    snapshot = LocalSampler().sample()
    assert (snapshot.gpu_source, list(snapshot.gpus), snapshot.gpu_error) == ("none", [], None)
