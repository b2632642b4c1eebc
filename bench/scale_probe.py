"""CPU time and peak memory inside a stage worker, for bench_scale.py; loaded through RLHF_STAGE_PLUGINS.

bench_scale.py runs our stages through `rlhf run`, so the stage trains in a
worker process two levels below the bench (rlhf -> run process -> worker).
Polling that process from outside would miss peaks between polls; this
module, imported into every engine process that loads plugins, wraps
`StageContext.log_metrics` (only workers have a StageContext) so that the
first metrics a stage logs at each step append one line to the file named
by RLHF_BENCH_MEMORY_LOG:

    {"step": N, "time": unix seconds, "cpu_s": ..., "rss_peak_mb": ..., "cuda_peak_mb": ...}

cpu_s is the CPU time the process has used so far (user + system, all its
threads): on a machine other work shares, the CPU seconds a step costs
move much less than its wall time. rss_peak_mb is the process's peak
resident set so far: the kernel's high-water mark of its memory (VmHWM in
/proc/self/status), not getrusage's ru_maxrss, which Linux carries over
an exec from the process that forked it: a process started by a parent
holding gigabytes would report the parent's peak. cuda_peak_mb is
torch.cuda.max_memory_allocated, where CUDA is in use. The first log of a
step comes before the Trainer evaluates or saves at that step, so the
figure covers training up to that step, as scale_library.py's does.
It costs a getrusage call and a read of /proc per step. Torch-free at import.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Mapping

from engine.stages.common.context import StageContext

VARIABLE = "RLHF_BENCH_MEMORY_LOG"


def step_record(step: int) -> dict[str, float]:
    """Now, this process's CPU seconds so far, and its peak memory so far in MiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record: dict[str, float] = {"step": step, "time": time.time(), "cpu_s": usage.ru_utime + usage.ru_stime,
                                "rss_peak_mb": peak_resident_mb(usage)}
    torch = sys.modules.get("torch")  # imported by the stage long before its first step
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        record["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def peak_resident_mb(usage: resource.struct_rusage) -> float:
    """This process's own peak resident set in MiB: VmHWM where /proc has it (see the module docstring)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return usage.ru_maxrss / 1024  # KiB on Linux (bytes on macOS, where this is only a fallback)


def _install() -> None:
    path = os.environ.get(VARIABLE)
    if not path:
        return
    original = StageContext.log_metrics
    seen: set[int] = set()

    def log_metrics(self: StageContext, step: int, metrics: Mapping[str, float]) -> None:
        if step not in seen:
            seen.add(step)
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(step_record(step)) + "\n")
        original(self, step, metrics)

    StageContext.log_metrics = log_metrics  # type: ignore[method-assign]


_install()
