"""The GPU check's figures, read from each step's workspace, and its summary table.

bench/gpu_check.sh runs every training step through `rlhf run` in a
workspace of its own (WORK/ws-STEP) and records each step's status and
seconds in WORK/steps.tsv. This reads the stages' own metrics from those
stores (nothing here times anything):

  ppo        seconds per update in generation, scoring and training (PPO's
             time/* metrics; median of the updates after the first, which pays
             one-off warm-up), and the response length
  pretrain   train/tokens_per_second (median of the logged windows after the
             first; evaluation and saving are outside the windows), and MFU:
             6 x parameters x tokens/s over the GPU's peak dense bf16 FLOP/s
  sft_qlora  seconds per step and examples/s, the last train loss
  demo       how many of its stages succeeded, and the slowest stage
  generate   tokens/s of each rollout method (bench/gpu_generate.py's JSON)

    python bench/gpu_report.py --work WORK step NAME     # one step's figures
    python bench/gpu_report.py --work WORK summary        # the table of all steps
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import StageRead, Store, open_workspace

#: H200 SXM dense bf16 (the datasheet's 989.5 TFLOP/s, no sparsity); a bf16 matmul of random
#: 8192^3 matrices measured ~790 TFLOP/s on these machines (/work/.library/device/KINDS.md)
PEAK_BF16_TFLOPS = 989.0
MEASURED_MATMUL_TFLOPS = 790.0
SPLIT = ("time/generation", "time/scoring", "time/training")


def series(store: Store, stage: StageRead, key: str) -> list[tuple[int, float, float]]:
    """(step, value, wall time) of one metric."""
    return [(int(p.step), p.value, p.wall_time) for p in store.metric_series(stage_id=stage.id, key=key)]


def values(store: Store, stage: StageRead, key: str, *, skip_first: bool = True) -> list[float]:
    points = [v for _, v, _ in series(store, stage, key)]
    return points[1:] if skip_first and len(points) > 1 else points


def open_stage(work: Path, step: str, kind: str) -> tuple[Any, Store, StageRead] | None:
    folder = work / f"ws-{step}"
    if not (folder / "rlhf.db").exists():
        return None
    workspace = open_workspace(folder, create=False)
    store = workspace.store
    runs = store.list_runs()
    stages = [s for r in runs for s in store.list_stages(run_id=r.id) if s.kind == kind]
    if not stages:
        workspace.close()
        return None
    return workspace, store, stages[-1]


def ppo_figures(work: Path, peak: float) -> dict[str, Any]:
    opened = open_stage(work, "ppo", "ppo")
    if opened is None:
        return {}
    workspace, store, stage = opened
    parts = {key: values(store, stage, key) for key in SPLIT}
    figures: dict[str, Any] = {"device": stage.device, "updates": len(parts["time/generation"]) + 1}
    if all(parts.values()):
        split = {key.split("/")[1]: statistics.median(v) for key, v in parts.items()}
        total = statistics.median([sum(p) for p in zip(*parts.values())])
        figures.update({f"{k}_s": round(v, 3) for k, v in split.items()})
        figures["update_s"] = round(total, 3)
        figures["shares"] = {k: round(v / total, 3) for k, v in split.items()}
        lengths = values(store, stage, "ppo/response_length")
        figures["response_length"] = round(statistics.median(lengths), 1) if lengths else None
        figures["responses_per_update"] = stage.config.get("responses_per_update")
        # Recomputing activations in the backward pass (on by default on a GPU from 100M parameters)
        # is part of the training time.
        figures["activation_checkpointing"] = stage.config.get("policy", {}).get("activation_checkpointing")
    workspace.close()
    return figures


def pretrain_figures(work: Path, peak: float) -> dict[str, Any]:
    opened = open_stage(work, "pretrain", "pretrain")
    if opened is None:
        return {}
    workspace, store, stage = opened
    windows = values(store, stage, "train/tokens_per_second")
    parameters = stage.config.get("model", {}).get("parameters")
    figures: dict[str, Any] = {"device": stage.device, "parameters": parameters, "windows": len(windows)}
    if windows and parameters:
        tokens_per_second = statistics.median(windows)
        flops = 6 * parameters * tokens_per_second
        figures.update({
            "tokens_per_s": round(tokens_per_second),
            "model_tflops": round(flops / 1e12, 2),
            "mfu": round(flops / (peak * 1e12), 4),
            "of_measured_matmul": round(flops / (MEASURED_MATMUL_TFLOPS * 1e12), 4),
            "peak_tflops": peak,
        })
    workspace.close()
    return figures


def sft_figures(work: Path, peak: float) -> dict[str, Any]:
    opened = open_stage(work, "sft_qlora", "sft")
    if opened is None:
        return {}
    workspace, store, stage = opened
    losses = series(store, stage, "train/loss")
    batch = stage.config.get("per_device_train_batch_size")
    figures: dict[str, Any] = {"device": stage.device, "steps": losses[-1][0] if losses else 0,
                               "quantization": stage.config.get("model", {}).get("quantization"),
                               "activation_checkpointing": stage.config.get("activation_checkpointing"),
                               "batch_size": batch}
    if len(losses) > 1:
        # Seconds per step between logged losses (the first is logged after step 1: warm-up is before it).
        per_step = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in itertools.pairwise(losses) if b[0] > a[0]]
        if per_step:
            figures["step_s"] = round(statistics.median(per_step), 3)
            if batch:
                figures["examples_per_s"] = round(batch / figures["step_s"], 1)
        figures["last_loss"] = round(losses[-1][1], 3)
    workspace.close()
    return figures


def demo_figures(work: Path, peak: float) -> dict[str, Any]:
    folder = work / "ws-demo"
    if not (folder / "rlhf.db").exists():
        return {}
    workspace = open_workspace(folder, create=False)
    store = workspace.store
    figures: dict[str, Any] = {}
    for run in store.list_runs():
        stages = store.list_stages(run_id=run.id)
        done = [s for s in stages if s.status.value == "succeeded"]
        timed = [((s.finished_at - s.started_at).total_seconds(), s.name)
                 for s in stages if s.started_at and s.finished_at]
        figures = {"run": run.name, "status": run.status.value, "stages_succeeded": f"{len(done)}/{len(stages)}",
                   "device": next((s.device for s in stages if s.device), None)}
        if timed:
            seconds, name = max(timed)
            figures["slowest_stage"] = f"{name} {seconds:.0f} s"
            figures["stage_seconds"] = {n: round(s) for s, n in timed}
        failed = [s.name for s in stages if s.status.value in ("failed", "crashed", "cancelled")]
        if failed:
            figures["not_succeeded"] = failed
    workspace.close()
    return figures


def generate_figures(work: Path, peak: float) -> dict[str, Any]:
    path = work / "generate.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())
    return {f"{r['method']} x{r['batch']}": (f"{r['tokens_per_second']:.0f} tok/s" if r["ok"]
                                             else f"FAILED: {r['note']}") for r in rows}


FIGURES: dict[str, Callable[[Path, float], dict[str, Any]]] = {
    "ppo": ppo_figures, "pretrain": pretrain_figures, "sft_qlora": sft_figures, "demo": demo_figures,
    "generate": generate_figures,
}


def figures_for(step: str, work: Path, peak: float) -> dict[str, Any]:
    reader = FIGURES.get(step)
    if reader is None:
        return {}
    try:
        return reader(work, peak)
    except Exception as exc:  # noqa: BLE001  (a summary with one step unreadable beats no summary)
        return {"report_error": f"{type(exc).__name__}: {exc}"}


def headline(step: str, figures: dict[str, Any]) -> str:
    """One line of the figures that answer the check's questions."""
    if step == "ppo" and "update_s" in figures:
        shares = figures["shares"]
        return (f"{figures['update_s']:.2f} s/update: generation {figures['generation_s']:.2f} s "
                f"({shares['generation']:.0%}), scoring {figures['scoring_s']:.2f} s ({shares['scoring']:.0%}), "
                f"training {figures['training_s']:.2f} s ({shares['training']:.0%}); "
                f"{figures['responses_per_update']} x {figures['response_length']} tokens, "
                f"activation checkpointing {'on' if figures['activation_checkpointing'] else 'off'}")
    if step == "pretrain" and "mfu" in figures:
        return (f"{figures['tokens_per_s']:,} tokens/s, {figures['model_tflops']} TFLOP/s (6N), "
                f"MFU {figures['mfu']:.1%} of {figures['peak_tflops']:.0f} "
                f"({figures['of_measured_matmul']:.1%} of the measured {MEASURED_MATMUL_TFLOPS:.0f})")
    if step == "sft_qlora" and "step_s" in figures:
        return (f"{figures['step_s']:.3f} s/step of {figures['batch_size']} examples "
                f"({figures.get('examples_per_s', '?')}/s), quantization {figures['quantization']}, "
                f"activation checkpointing {'on' if figures['activation_checkpointing'] else 'off'}, "
                f"last loss {figures.get('last_loss')}")
    if step == "demo" and "stages_succeeded" in figures:
        return (f"run {figures['run']} {figures['status']}, stages {figures['stages_succeeded']}"
                + (f", slowest {figures['slowest_stage']}" if "slowest_stage" in figures else ""))
    if step == "generate" and figures:
        return "; ".join(f"{k}: {v}" for k, v in figures.items())
    return ", ".join(f"{k} {v}" for k, v in figures.items())


def read_steps(work: Path) -> list[tuple[str, str, float]]:
    path = work / "steps.tsv"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, status, seconds = line.split("\t")
        rows.append((name, status, float(seconds)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the check's work folder")
    parser.add_argument("--peak-tflops", type=float, default=PEAK_BF16_TFLOPS,
                        help=f"the GPU's peak dense bf16 TFLOP/s for MFU (default {PEAK_BF16_TFLOPS:.0f}: H200 SXM)")
    parser.add_argument("--json", type=Path, help="summary: also write every figure here")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("step", help="one step's figures").add_argument("name")
    commands.add_parser("summary", help="the table of all steps")
    options = parser.parse_args()

    if options.command == "step":
        figures = figures_for(options.name, options.work, options.peak_tflops)
        print(f"[{options.name}] {headline(options.name, figures) or 'no figures'}", flush=True)
        return
    steps = read_steps(options.work)
    everything = {}
    width = max([len(name) for name, _, _ in steps] + [4])
    print(f"\n{'step':<{width}}  {'status':<16} {'seconds':>7}  figures")
    for name, status, seconds in steps:
        figures = figures_for(name, options.work, options.peak_tflops)
        everything[name] = {"status": status, "seconds": seconds, **figures}
        print(f"{name:<{width}}  {status:<16} {seconds:>7.0f}  {headline(name, figures)}")
    print(f"{'total':<{width}}  {'':<16} {sum(s for _, _, s in steps):>7.0f}")
    if options.json:
        options.json.write_text(json.dumps(everything, indent=1, default=str))


if __name__ == "__main__":
    main()
