"""PPO's rollout, three ways: tokens/s of plain `generate`, continuous batching and a compiled static cache.

On one model folder (bench/gpu_prepare.py's qwen-0.5b: Qwen2.5-0.5B's shape,
random weights) and the demo task's prompts in the tokenizer's chat format,
each method samples one response per prompt as PPO's rollout does
(temperature 1, top_k 0, top_p 1), `--new-tokens` tokens each (the end token
is held off with min_new_tokens, where the method honours it, so every method
does the same work; tokens/s counts what each really returned):

  generate+autocast  fp32 weights under bf16 autocast: what the PPO stage does today
                     (engine/stages/common/generation.py under accelerator.autocast)
  generate           bf16 weights, dynamic KV cache
  generate_batch     bf16 weights, transformers' continuous batching (paged KV cache,
                     CUDA graphs on a GPU); the manager is kept between calls
                     (persistent_manager), as a rollout loop would keep it
  static+compile     bf16 weights, cache_implementation="static" with transformers'
                     automatic torch.compile of the decoding step (CompileConfig,
                     mode reduce-overhead: CUDA graphs)

Each is warmed up once (model load, kernel selection, compiling, graph
capture: its seconds are printed as `first call`), then timed `--repeats`
times; the median is reported. Rows are written to `--json` as they finish,
so a run cut short by a timeout keeps what it measured.

    python bench/gpu_generate.py --model DIR [--batch-sizes 32,128 --new-tokens 128 --repeats 2]
    python bench/gpu_generate.py --model DIR --device cpu --compile-backend eager   # CPU smoke run
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.stages.common import setup as runtime  # noqa: F401  (imported first: it quiets tqdm's bars)

# isort: split

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase

from engine.demo import task as demo_task
from engine.stages.common.generation import format_prompt

METHODS = ("generate", "generate+autocast", "generate_batch", "static+compile")


@dataclass
class Row:
    method: str
    batch: int
    new_tokens: int
    ok: bool
    tokens: int = 0  # tokens generated per call (all responses)
    seconds: float = 0.0  # median of the timed calls
    first_call: float = 0.0  # the warm-up call: loading, compiling, capturing graphs
    note: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.ok and self.seconds > 0 else 0.0


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(call: Callable[[], int], device: str, repeats: int) -> tuple[float, list[float], int]:
    """(first call's seconds, the timed calls' seconds, tokens of the last call)."""
    def once() -> tuple[float, int]:
        sync(device)
        start = time.perf_counter()
        tokens = call()
        sync(device)
        return time.perf_counter() - start, tokens

    first, tokens = once()
    runs = []
    for _ in range(repeats):
        seconds, tokens = once()
        runs.append(seconds)
    return first, runs, tokens


def sampling_config(tokenizer: PreTrainedTokenizerBase, new_tokens: int) -> GenerationConfig:
    """PPO's sampling (engine/stages/ppo/stage.py: rollout): the whole distribution at temperature 1."""
    return GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def count_new_tokens(output: torch.Tensor, prompt_length: int, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens generated per row, up to and including an end token (later ones are padding)."""
    new = output[:, prompt_length:]
    eos = new == tokenizer.eos_token_id
    ended = eos.any(dim=1)
    lengths = torch.where(ended, eos.int().argmax(dim=1) + 1, new.shape[1])
    return int(lengths.sum())


def plain_generate(model: Any, tokenizer: PreTrainedTokenizerBase, prompts: list[str], config: GenerationConfig,
                   device: str, *, autocast: bool) -> Callable[[], int]:
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    width = encoded["input_ids"].shape[1]
    context = torch.autocast(device, dtype=torch.bfloat16) if autocast else nullcontext()

    def call() -> int:
        with torch.inference_mode(), context:
            output = model.generate(**encoded, generation_config=config)
        return count_new_tokens(output, width, tokenizer)

    return call


def continuous_batching(model: Any, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                        config: GenerationConfig, *, warmup: bool, num_blocks: int | None) -> Callable[[], int]:
    inputs = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    accepted = inspect.signature(model.generate_batch).parameters
    # Only what this transformers version takes (the keyword arguments moved between 5.x releases).
    wanted: dict[str, Any] = {"progress_bar": False, "persistent_manager": True, "warmup": warmup}
    if num_blocks:
        from transformers.generation import ContinuousBatchingConfig

        wanted["continuous_batching_config"] = ContinuousBatchingConfig(num_blocks=num_blocks)
    extra = {k: v for k, v in wanted.items() if k in accepted}

    def call() -> int:
        results = model.generate_batch(inputs=inputs, generation_config=config, **extra)
        outputs = list(results.values())
        failed = [o for o in outputs if getattr(o, "error", None)]
        if len(outputs) != len(inputs) or failed:
            raise RuntimeError(f"generate_batch returned {len(outputs)} of {len(inputs)} results, "
                               f"{len(failed)} with errors: {failed[0].error if failed else ''}")
        return sum(len(o.generated_tokens) for o in outputs)

    return call


def measure(method: str, folder: Path, tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch: int,
            options: argparse.Namespace) -> Row:
    device, new_tokens = options.device, options.new_tokens
    row = Row(method, batch, new_tokens, ok=False)
    config = sampling_config(tokenizer, new_tokens)
    dtype = torch.float32 if method == "generate+autocast" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    torch.manual_seed(0)
    try:
        if method in ("generate", "generate+autocast"):
            call = plain_generate(model, tokenizer, prompts, config, device, autocast=method == "generate+autocast")
        elif method == "generate_batch":
            if not hasattr(model, "generate_batch"):
                row.note = f"transformers {transformers.__version__} has no generate_batch (continuous batching)"
                return row
            call = continuous_batching(model, tokenizer, prompts, config, warmup=options.cb_warmup,
                                       num_blocks=options.cb_num_blocks)
        else:
            from transformers import CompileConfig

            compile_config = CompileConfig(backend=options.compile_backend)
            if options.compile_backend != "inductor":
                compile_config.mode = None  # type: ignore[assignment]  # modes are inductor's
            if device != "cuda":
                # transformers compiles generate's decoding step on GPUs only, unless told
                # (its own switch, meant for tests): the smoke run checks the path on a CPU.
                compile_config._compile_all_devices = True
            config.cache_implementation = "static"
            config.compile_config = compile_config
            call = plain_generate(model, tokenizer, prompts, config, device, autocast=False)
        first, runs, row.tokens = timed(call, device, options.repeats)
        row.first_call, row.seconds, row.ok = first, statistics.median(runs), True
        if method == "static+compile":
            breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
            compiled = hasattr(model, "_compiled_call")
            row.note = f"compiled: {'yes' if compiled else 'NO'}; graph breaks: {breaks}"
    except Exception as exc:  # noqa: BLE001  (one method failing must not lose the others' rows)
        traceback.print_exc()
        row.note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        if hasattr(model, "destroy_cached_continuous_batching_manager"):
            model.destroy_cached_continuous_batching_manager()
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return row


def print_table(rows: list[Row]) -> None:
    print(f"\n{'method':<18} {'batch':>5} {'tokens':>7} {'s/call':>8} {'tokens/s':>9} {'ms/step':>8} "
          f"{'first call':>10}  note")
    for r in rows:
        if r.ok:
            print(f"{r.method:<18} {r.batch:>5} {r.tokens:>7} {r.seconds:>8.2f} {r.tokens_per_second:>9.0f} "
                  f"{1000 * r.seconds / r.new_tokens:>8.1f} {r.first_call:>9.1f}s  {r.note}")
        else:
            print(f"{r.method:<18} {r.batch:>5} {'-':>7} {'-':>8} {'-':>9} {'-':>8} {'-':>10}  FAILED: {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a causal-LM folder with its tokenizer")
    parser.add_argument("--batch-sizes", default="32", help="comma-separated prompts per call (default 32: PPO's)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up call")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--compile-only-first-batch", action="store_true",
                        help="static+compile at the first batch size only (each size compiles again)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: no codegen)")
    parser.add_argument("--no-cb-warmup", dest="cb_warmup", action="store_false",
                        help="generate_batch without capturing its CUDA graphs first (slow on a CPU)")
    parser.add_argument("--cb-num-blocks", type=int, default=None,
                        help="generate_batch's KV cache pages (default: sized from free memory, which on a CPU "
                        "means allocating gigabytes)")
    parser.add_argument("--json", type=Path, help="write the rows here (after each one)")
    options = parser.parse_args()

    methods = [m.strip() for m in options.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; expected some of {', '.join(METHODS)}")
    batches = [int(b) for b in options.batch_sizes.split(",")]
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    questions = [row["prompt"] for row in demo_task.demo_instructions(max(batches))]
    prompts = [format_prompt(tokenizer, q) for q in questions]
    where = torch.cuda.get_device_name() if options.device == "cuda" else "cpu"
    print(f"{options.model.name} on {where}: torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{options.new_tokens} new tokens per prompt", flush=True)

    rows: list[Row] = []
    for batch in batches:
        for method in methods:
            if method == "static+compile" and options.compile_only_first_batch and batch != batches[0]:
                continue
            row = measure(method, options.model, tokenizer, prompts[:batch], batch, options)
            rows.append(row)
            state = f"{row.tokens_per_second:.0f} tokens/s" if row.ok else f"FAILED ({row.note})"
            print(f"{method} x {batch}: {state}", flush=True)
            if options.json:
                options.json.write_text(json.dumps(
                    [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in rows], indent=1))
    print_table(rows)


if __name__ == "__main__":
    main()
