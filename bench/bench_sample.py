"""Sampling throughput: `rlhf run` of the sample stage against a plain `model.generate` loop.

Both generate with the same model folder (a llama-4m saved with
save_pretrained, and the bpe-4k tokenizer), the same prompts in the same
chat format, the same sampling settings and the same generate calls (the
stage's batch size gives K responses to batch_size // K prompts a call, and
each call's seed) -- so both write the very same tokens, which the bench
checks. The loop runs in this process, the stage through `rlhf run`, exactly
as users run it (a detached run process and a stage worker). Runs alternate
(loop, stage, loop, stage, ...) so drift in the machine's speed hits both
alike; medians are reported.

A run's tokens/s is over its generate calls after the first (the first pays
one-off warm-up, for both). The stage's call times are the gaps between the
wall times its per-call metrics reached the store, so they include storing
the responses and are not the stage's own figure; that figure
(manifest.json's tokens_per_second: generation only, every call) and the end-to-end time of
`rlhf run` (process starts and model loading included) are printed too.

On a machine other work shares, torch's default of one thread per core makes
every figure swing by several times (a thread that waits for a busy core
stalls the others); `--threads 1` gives both sides one thread each and
steadies them.

    .venv/bin/python bench/bench_sample.py [--prompts 64 --k 4 --max-new-tokens 64 --batch-size 16
                                            --repeats 5 --threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# As in the stage's worker (engine.runtime.launcher.child_env): the tokenizer's thread
# pool would otherwise compete with torch's threads for the cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.stages.common import setup as runtime  # imported first: it quiets tqdm's bars

# isort: split

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.spec.toml_render import render_toml
from engine.stages.common import stdlib_corpus as corpus
from engine.stages.common.context import Source
from engine.stages.common.models import load_model_for_training
from engine.stages.common.tokenizer import load_tokenizer
from engine.stages.sample.stage import call_seed
from store import open_workspace


def make_model_folder(folder: Path, model: str, cache_dir: Path) -> Path:
    """A random-init preset saved as a model folder, with the built-in tokenizer."""
    tokenizer = load_tokenizer(Source("builtin", "bpe-4k"), cache_dir)
    load_model_for_training(Source("builtin", model), tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_prompts(count: int, cache_dir: Path) -> list[str]:
    """Questions of varied length about standard-library docstrings."""
    docs = corpus.load_stdlib_docs(cache_dir)
    step = max(1, len(docs) // count)
    return [f"Explain this: {' '.join(docs[i * step].split()[:8 + (i * 7) % 40])}" for i in range(count)]


# --- the plain loop -----------------------------------------------------------------------


def baseline(
    folder: Path, prompts: list[str], options: argparse.Namespace
) -> tuple[list[tuple[int, float]], list[str]]:
    """Tokens and seconds of each generate call, and every response, from a plain loop."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    per_call = max(1, options.batch_size // options.k)
    calls: list[tuple[int, float]] = []
    responses: list[str] = []
    for index, start in enumerate(range(0, len(prompts), per_call)):
        began = time.perf_counter()
        chats = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True)
                 for p in prompts[start:start + per_call]]
        inputs = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(call_seed(options.seed, 0, index))
        with torch.inference_mode():
            output = model.generate(
                **inputs, do_sample=True, temperature=options.temperature, top_p=options.top_p,
                max_new_tokens=options.max_new_tokens, num_return_sequences=options.k,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        new = output[:, inputs["input_ids"].shape[1]:].tolist()
        tokens = 0
        for ids in new:
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            ids = [i for i in ids if i != tokenizer.pad_token_id]
            tokens += len(ids)
            responses.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        calls.append((tokens, time.perf_counter() - began))
    return calls, responses


# --- the stage ---------------------------------------------------------------------------


def stage(folder: Path, prompts_file: Path, options: argparse.Namespace, cache_dir: Path) -> dict:
    """Run the sample stage through `rlhf run` in a throwaway workspace."""
    fields = {
        "kind": "sample", "from": str(folder), "prompts": str(prompts_file),
        "responses_per_prompt": options.k, "temperature": options.temperature, "top_p": options.top_p,
        "max_new_tokens": options.max_new_tokens, "seed": options.seed, "batch_size": options.batch_size,
    }
    toml = render_toml({"stages": {"sample": fields}})
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "bench.toml"
        spec_path.write_text(toml)
        env = {**os.environ, "RLHF_CACHE_DIR": str(cache_dir), "RLHF_WORKSPACE": str(Path(tmp) / "ws"),
               "RLHF_DEVICES": "cpu"}
        rlhf = Path(sys.executable).with_name("rlhf")
        began = time.perf_counter()
        result = subprocess.run([str(rlhf), "run", str(spec_path), "--json"], env=env,
                                capture_output=True, text=True)
        end_to_end = time.perf_counter() - began
        if result.returncode != 0:
            raise SystemExit(f"rlhf run failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        workspace = open_workspace(Path(tmp) / "ws")
        store = workspace.store
        (stage_row,) = store.list_stages(run_id=1)
        logged = [(int(p.step), p.wall_time)
                  for p in store.metric_series(stage_id=stage_row.id, key="sample/tokens_per_second")]
        samples = store.list_samples(run_id=1)
        manifest = json.loads((Path(stage_row.output_path) / "manifest.json").read_text())
        workspace.close()
    tokens: dict[int, int] = defaultdict(int)
    for s in samples:
        tokens[s.meta["call"]] += s.meta["tokens"]
    # Call i ends at logged[i]; its time is the gap since the previous call ended.
    calls = [(tokens[i], logged[i][1] - logged[i - 1][1]) for i in range(1, len(logged))]
    return {"calls": calls, "responses": [s.response for s in samples], "end_to_end": end_to_end,
            "self_reported": manifest["tokens_per_second"], "tokens": manifest["tokens"]}


def tokens_per_second(calls: list[tuple[int, float]]) -> tuple[float, float]:
    """(median over calls, total over calls) tokens/s."""
    median = statistics.median(t / s for t, s in calls)
    total = sum(t for t, _ in calls) / sum(s for _, s in calls)
    return median, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-4m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None, help="built-ins cache (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both (OMP_NUM_THREADS); default: torch's own choice. "
                             "1 steadies the figures on a machine other work shares")
    options = parser.parse_args()
    if options.threads:
        os.environ["OMP_NUM_THREADS"] = str(options.threads)  # the stage's processes inherit it
        torch.set_num_threads(options.threads)

    runtime.silence_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = options.cache_dir or Path(tmp) / "cache"
        folder = make_model_folder(Path(tmp) / "model", options.model, cache_dir)
        prompts = make_prompts(options.prompts, cache_dir)
        prompts_file = Path(tmp) / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        calls = -(-options.prompts // max(1, options.batch_size // options.k))
        print(f"{options.model}: {options.prompts} prompts x K={options.k}, {options.max_new_tokens} new tokens, "
              f"batch {options.batch_size} responses ({calls} generate calls, timed: 2..{calls}), "
              f"{torch.get_num_threads()} threads", flush=True)
        loops, stages = [], []
        for repeat in range(options.repeats):
            loop_calls, loop_responses = baseline(folder, prompts, options)
            loops.append(tokens_per_second(loop_calls[1:]))
            result = stage(folder, prompts_file, options, cache_dir)
            stages.append(tokens_per_second(result["calls"]))
            same = sorted(loop_responses) == sorted(result["responses"])
            print(f"  repeat {repeat + 1}: plain loop {loops[-1][0]:7.0f} tok/s   stage {stages[-1][0]:7.0f} tok/s"
                  f"   (median call)   stage's own figure {result['self_reported']:7.0f} tok/s   "
                  f"rlhf run end to end {result['end_to_end']:5.1f} s for {result['tokens']} tokens   "
                  f"same responses: {'yes' if same else 'NO'}", flush=True)
            if not same:
                raise SystemExit("the loop and the stage did not generate the same responses: not the same work")
    for label, index in (("median call", 0), ("all calls", 1)):
        loop_tps = statistics.median(r[index] for r in loops)
        stage_tps = statistics.median(r[index] for r in stages)
        print(f"{label:>11}: plain loop {loop_tps:7.0f} tok/s   stage {stage_tps:7.0f} tok/s   "
              f"ratio {stage_tps / loop_tps:.3f}   (median of {options.repeats} alternating repeats; target >= 0.95)")


if __name__ == "__main__":
    main()
