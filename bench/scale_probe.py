"""CPU time and peak memory inside a stage worker, for bench_scale.py; loaded through RLHF_STAGE_PLUGINS.

bench_scale.py runs our stages through `rlhf run`, so the stage trains in a
worker process two levels below the bench (rlhf -> run process -> worker).
Polling that process from outside would miss peaks between polls; this
module, imported into every engine process that loads plugins, wraps
`StageContext.log_metrics` and `StageContext.set_resolved_config` (only
workers have a StageContext) so that the first metrics a stage logs at
each step append one line to the file named by RLHF_BENCH_MEMORY_LOG:

    {"step": N, "time": unix seconds, "cpu_s": ..., "rss_peak_mb": ..., "rss_anon_mb": ...,
     "rss_file_mb": ..., "cuda_peak_mb": ...}

and one more, with step -1 (SET_UP), when the stage records its resolved
config: every training stage does so once its models and trainer are
built, with the first step next (a stage that recorded it twice would
leave two lines; the reader keeps the last).

cpu_s is the CPU time the process has used so far (user + system, all its
threads): on a machine other work shares, the CPU seconds a step costs
move much less than its wall time. rss_peak_mb is the process's peak
resident set so far: the kernel's high-water mark of its memory (VmHWM in
/proc/self/status), not getrusage's ru_maxrss, which Linux carries over
an exec from the process that forked it: a process started by a parent
holding gigabytes would report the parent's peak. rss_anon_mb and
rss_file_mb split the resident set at that moment (see memory_status).
cuda_peak_mb is torch.cuda.max_memory_allocated, where CUDA is in use.
The first log of a step comes before the Trainer evaluates or saves at
that step, so the figures cover training up to that step, as
scale_library.py's do.
It costs a getrusage call and a read of /proc per step. Torch-free at import.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any

from engine.stages.common.context import StageContext

VARIABLE = "RLHF_BENCH_MEMORY_LOG"
#: the step number of the record written when the models and trainer are built, before the first step
SET_UP = -1


def step_record(step: int) -> dict[str, float]:
    """Now, this process's CPU seconds so far, and its peak memory so far in MiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = memory_status()
    record: dict[str, float] = {
        "step": step, "time": time.time(), "cpu_s": usage.ru_utime + usage.ru_stime,
        # ru_maxrss only where /proc is missing: KiB on Linux (bytes on macOS)
        "rss_peak_mb": status.get("hwm_mb", usage.ru_maxrss / 1024),
        "rss_anon_mb": status.get("anon_mb", 0.0), "rss_file_mb": status.get("file_mb", 0.0),
    }
    torch = sys.modules.get("torch")  # imported by the stage long before its first step
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        record["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def memory_status() -> dict[str, float]:
    """MiB from /proc/self/status: VmHWM (the peak resident set), and the
    resident set now, split into RssAnon (what the process allocated) and
    RssFile (file pages it maps: safetensors weights load memory-mapped, and
    count once read). Empty where there is no /proc."""
    fields = {"VmHWM:": "hwm_mb", "RssAnon:": "anon_mb", "RssFile:": "file_mb"}
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name = line.split(maxsplit=1)[0] if line.strip() else ""
                if name in fields:
                    found[fields[name]] = int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return found


def _install() -> None:
    path = os.environ.get(VARIABLE)
    if not path:
        return
    original_log_metrics = StageContext.log_metrics
    original_set_resolved_config = StageContext.set_resolved_config
    seen: set[int] = set()

    def write(step: int) -> None:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(step_record(step)) + "\n")

    def log_metrics(self: StageContext, step: int, metrics: Mapping[str, float]) -> None:
        if step not in seen:
            seen.add(step)
            write(step)
        original_log_metrics(self, step, metrics)

    def set_resolved_config(self: StageContext, config: Mapping[str, Any], *, device: str | None = None) -> None:
        # Every training stage records its resolved config once its models and
        # trainer are built, before the first step: the set-up's share of the peak.
        write(SET_UP)
        original_set_resolved_config(self, config, device=device)

    StageContext.log_metrics = log_metrics  # type: ignore[method-assign]
    StageContext.set_resolved_config = set_resolved_config  # type: ignore[method-assign]


_install()
