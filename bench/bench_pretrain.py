"""Pretrain throughput: `rlhf run` of the pretrain stage against a plain PyTorch loop.

Both train the same model on the same packed blocks with the same batch,
optimizer (fused AdamW, decay on weights only), clipping and step count, the
loop in this process, the stage through `rlhf run`. Runs alternate (loop, stage, loop, stage, ...) so that
drift in the machine's speed hits both alike; the median of each is reported.

Each run yields the wall time of every step after WARMUP (one-off start-up
work counts for neither). A run's tokens/s is one step's tokens over its
median step time: this machine's speed drifts by 3x for seconds at a time,
which a median of steps shrugs off and a total time does not. The mean-based
figure is printed too. The stage's step times are read from the wall times
its train/loss metrics reached the store with, not from its own tokens/s
metric, so the stage does not grade itself.

    .venv/bin/python bench/bench_pretrain.py [--model llama-4m --steps 40 --repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.stages.common import setup as runtime  # imported first: it quiets tqdm's bars

# isort: split

import torch
from transformers import get_scheduler

from engine.stages.common.context import Source
from engine.stages.common.data_loading import (
    load_texts,
    pack_blocks,
    split_documents,
)
from engine.stages.common.models import load_model_for_training
from engine.stages.common.tokenizer import load_tokenizer
from engine.stages.pretrain.spec import PretrainSpec
from store import open_workspace

WARMUP = 3


def bench_spec(model: str, steps: int, batch_size: int, block_size: int) -> PretrainSpec:
    """The stage's spec. Eval and checkpoints come after the last step only
    (at max_steps the Trainer does both), outside the timed window: the
    baseline does neither, and this measures the training loop."""
    return PretrainSpec(
        from_=f"builtin:{model}", max_steps=steps, batch_size=batch_size, block_size=block_size,
        eval_every=steps, save_every=steps, log_every=1,
    )


def packed_train_blocks(spec: PretrainSpec, cache_dir: Path) -> torch.Tensor:
    """The same blocks the stage trains on: same corpus, split and packing."""
    tokenizer = load_tokenizer(Source("builtin", "bpe-4k"), cache_dir)
    texts = load_texts(Source("builtin", "stdlib-docs"), cache_dir=cache_dir)
    train_texts, _ = split_documents(texts, spec.eval_fraction, spec.seed)
    return pack_blocks(train_texts, tokenizer, spec.block_size)


def baseline_step_seconds(spec: PretrainSpec, cache_dir: Path, blocks: torch.Tensor) -> list[float]:
    """A plain PyTorch training loop doing what the stage's Trainer does per step:
    random batches, forward, backward, clip, fused AdamW, scheduler step.
    Returns the wall time of each step after WARMUP."""
    tokenizer = load_tokenizer(Source("builtin", "bpe-4k"), cache_dir)
    model = load_model_for_training(Source("builtin", spec.from_.split(":", 1)[1]), tokenizer, seed=spec.seed)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # norms (Llama has no biases)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate, fused=True,  # what the Trainer's default optim (adamw_torch_fused) builds
    )
    scheduler = get_scheduler(spec.lr_scheduler, optimizer, num_warmup_steps=spec.warmup_steps,
                              num_training_steps=spec.max_steps)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(spec.seed))
    ends = [time.perf_counter()]
    for step in range(spec.max_steps):
        index = order[(step * spec.batch_size + torch.arange(spec.batch_size)) % len(blocks)]
        input_ids = blocks[index].long()
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the stage reads its loss every step (log_every = 1); so does this loop
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends[WARMUP:], ends[WARMUP + 1:])]


def baseline_tokens_per_second(spec: PretrainSpec, cache_dir: Path, blocks: torch.Tensor) -> float:
    return tokens_per_second(spec, baseline_step_seconds(spec, cache_dir, blocks))


def stage_step_seconds(spec: PretrainSpec, cache_dir: Path) -> list[float]:
    """Run the pretrain stage through `rlhf run` (a detached run process and a
    stage worker, exactly as users run it) in a throwaway workspace; the wall
    time of each step after WARMUP, from its metrics in the store."""
    fields = {
        "kind": "pretrain", "from": spec.from_, "data": spec.data, "max_steps": spec.max_steps,
        "batch_size": spec.batch_size, "block_size": spec.block_size, "eval_every": spec.eval_every,
        "save_every": spec.save_every, "log_every": spec.log_every, "seed": spec.seed,
    }
    toml = "[stages.pretrain]\n" + "".join(
        f"{key} = {value!r}\n".replace("'", '"') for key, value in fields.items()
    )
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "bench.toml"
        spec_path.write_text(toml)
        env = {**os.environ, "RLHF_CACHE_DIR": str(cache_dir), "RLHF_WORKSPACE": str(Path(tmp) / "ws")}
        rlhf = Path(sys.executable).with_name("rlhf")
        result = subprocess.run([str(rlhf), "run", str(spec_path), "--json"], env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"rlhf run failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        workspace = open_workspace(Path(tmp) / "ws")
        stage = workspace.store.list_stages(run_id=1)[0]
        logged = {int(p.step): p.wall_time
                  for p in workspace.store.metric_series(stage_id=stage.id, key="train/loss")}
        workspace.close()
    ends = [logged[step] for step in range(WARMUP, spec.max_steps + 1)]
    return [b - a for a, b in itertools.pairwise(ends)]


def tokens_per_second(spec: PretrainSpec, step_seconds: list[float], *, use_mean: bool = False) -> float:
    seconds = statistics.fmean(step_seconds) if use_mean else statistics.median(step_seconds)
    return spec.batch_size * spec.block_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-4m")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="built-ins cache (default: a temporary folder)")
    options = parser.parse_args()

    runtime.silence_libraries()
    spec = bench_spec(options.model, options.steps, options.batch_size, options.block_size)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = options.cache_dir or Path(tmp)
        blocks = packed_train_blocks(spec, cache_dir)
        print(f"{options.model}, batch {spec.batch_size} x {spec.block_size} tokens, "
              f"{spec.max_steps} steps (timed: {WARMUP + 1}..{spec.max_steps}), "
              f"{torch.get_num_threads()} threads", flush=True)
        loop: list[list[float]] = []
        stage: list[list[float]] = []
        for repeat in range(options.repeats):
            loop.append(baseline_step_seconds(spec, cache_dir, blocks))
            stage.append(stage_step_seconds(spec, cache_dir))
            print(f"  repeat {repeat + 1}: plain loop {tokens_per_second(spec, loop[-1]):8.0f} tok/s   "
                  f"stage {tokens_per_second(spec, stage[-1]):8.0f} tok/s   (median step)", flush=True)
    for label, use_mean in (("median step", False), ("mean step", True)):
        loop_tps = statistics.median(tokens_per_second(spec, s, use_mean=use_mean) for s in loop)
        stage_tps = statistics.median(tokens_per_second(spec, s, use_mean=use_mean) for s in stage)
        print(f"{label:>11}: plain loop {loop_tps:8.0f} tok/s   stage {stage_tps:8.0f} tok/s   "
              f"ratio {stage_tps / loop_tps:.3f}   (median of {options.repeats} alternating repeats)")

if __name__ == "__main__":
    main()
