"""Sampling: K responses to each prompt from one or several models, stored as one batch.

`run(ctx)` reads top to bottom: read the prompts, plan which model writes
which response, then for each model load it and generate in batches with the
KV cache (the shared `generation.generate`), storing every batch of
responses as soon as it is written. The stored batch -- prompts, responses,
the model that wrote each, the sampling settings -- is what people rank next.

Several models share the K responses to a prompt round-robin, rotating with
the prompt (response j of prompt i comes from model (i + j) mod M), so a
ranking mixes the models' answers as InstructGPT's labellers saw them.

Each generate call gets its own seed, derived from the spec's seed, the
model's position in `from` and the call's position in that model's plan, and
recorded with each response (`meta.seed`). A run therefore reproduces
exactly, and a resumed stage -- which keeps its batch and skips the calls
whose responses are already stored -- ends with what an uninterrupted one
would have written.

The stage's output folder (`final/`) holds `samples.jsonl` (one response a
line, with its prompt, model and settings) and `manifest.json` (the batch's
settings, models, counts and throughput), for people and other tools; the
store stays the source of truth.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common.prologue import begin

# isort: split

import gc
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import torch

from engine.errors import StageCancelled, StageFailed
from engine.stages.common.context import Source, StageContext, checkpoint_name
from engine.stages.common.data_loading import load_prompts
from engine.stages.common.generation import Generated, SamplingSettings, format_prompt, generate
from engine.stages.common.inference import dtype_for, load_for_generation, load_tokenizer_for, max_positions
from engine.stages.sample.spec import SampleSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, SampleSpec)
    k = spec.responses_per_prompt

    # -- models ----------------------------------------------------------------
    # Tokenizers and context lengths come first (cheap); weights are loaded one
    # model at a time below, so several large models never share memory.
    sources = [ctx.resolve(ref) for ref in spec.models]
    checkpoints = [checkpoint_name(source) for source in sources]
    tokenizers = [load_tokenizer_for(source, ctx.cache_dir) for source in sources]

    # -- prompts ---------------------------------------------------------------
    # Each distinct prompt once (a ranking shows K responses to one prompt),
    # and only prompts that leave every model room for max_new_tokens.
    rows = _fitting(ctx, read_prompts(ctx, spec), sources, tokenizers, spec.max_new_tokens)
    prompt_ids = ctx.add_prompts(rows)
    prompts = [row["text"] for row in rows]

    # -- the plan and the batch ------------------------------------------------
    plans = [plan_calls(len(prompts), k, len(sources), m, spec.batch_size, spec.seed) for m in range(len(sources))]
    settings = SamplingSettings(
        temperature=spec.temperature, top_p=spec.top_p, max_new_tokens=spec.max_new_tokens, seed=spec.seed
    )
    batch_id, done = _open_batch(ctx, spec, settings, checkpoints)
    total = len(prompts) * k
    stored = sum(done.values())
    ctx.set_resolved_config(
        {
            "settings": {**settings.to_dict(), "responses_per_prompt": k},
            "batch_id": batch_id,
            "batch_size": spec.batch_size,
            "models": [{"checkpoint": c, "source": f"{s.kind}:{s.value}",
                        "responses": sum(len(call.prompts) * call.k for call in plan)}
                       for c, s, plan in zip(checkpoints, sources, plans)],
            "prompts": {"source": rows[0]["source"], "count": len(prompts)},
            "responses": total,
            "dtype": str(dtype_for(hardware.precision)).removeprefix("torch."),
        },
        device=hardware.describe(),
    )
    ctx.set_progress(stored, total)
    if stored:
        ctx.log(f"resuming batch {batch_id}: {stored} of {total} responses are already stored")

    # -- generate --------------------------------------------------------------
    for m, (source, checkpoint, tokenizer) in enumerate(zip(sources, checkpoints, tokenizers)):
        # A call is done when its responses are stored: they are stored together.
        todo = [call for call in plans[m] if done[(prompt_ids[call.prompts[0]], checkpoint)] < call.k]
        if not todo:
            continue
        if ctx.should_stop():
            raise _cancelled(stored, total, batch_id)
        model = load_for_generation(source, tokenizer, dtype=dtype_for(hardware.precision),
                                    device=hardware.device, seed=spec.seed)
        ctx.log(f"generating {sum(len(c.prompts) * c.k for c in todo)} responses with {checkpoint}")
        for call in todo:
            if ctx.should_stop():
                raise _cancelled(stored, total, batch_id)
            started = time.perf_counter()
            responses = generate(
                model, tokenizer, [prompts[i] for i in call.prompts], replace(settings, seed=call.seed),
                responses_per_prompt=call.k, batch_size=len(call.prompts),
            )
            seconds = time.perf_counter() - started
            ctx.log_samples(
                [
                    {"prompt_id": prompt_ids[i], "response": g.text,
                     "meta": {**g.meta(), "seconds": round(seconds, 4), "seed": call.seed, "call": call.index}}
                    for i, answers in zip(call.prompts, responses) for g in answers
                ],
                batch_id=batch_id, checkpoint=checkpoint,
            )
            stored += len(call.prompts) * call.k
            ctx.log_metrics(stored, _call_metrics([g for answers in responses for g in answers], seconds))
            ctx.set_progress(stored, total)
        del model
        _free_memory()

    # -- save ------------------------------------------------------------------
    ctx.flush()
    _write_outputs(ctx, batch_id, settings, k)


# --- what the stage reads ---------------------------------------------------------


def read_prompts(ctx: StageContext, spec: SampleSpec) -> list[dict[str, Any]]:
    """The distinct prompts, as the store keeps them: text, source, reference
    (when the data has one). Read as the SFT stage reads its eval prompts."""
    inline = spec.prompt_texts
    if spec.prompts is None:  # the pipeline loader requires them, or fills in the demo's for a demo model
        raise StageFailed("no prompts to answer: name them with `prompts`")
    if inline is None:
        return load_prompts(ctx.resolve(str(spec.prompts)), cache_dir=ctx.cache_dir,
                            count=spec.max_prompts, prompt_field=spec.prompt_field)
    distinct = list(dict.fromkeys(inline))
    if len(distinct) < len(inline):
        ctx.log(f"prompts: {len(inline) - len(distinct)} repeated prompts left out")
    return [{"text": text, "source": f"inline:{ctx.stage_name}"} for text in distinct[: spec.max_prompts]]


def _fitting(ctx: StageContext, rows: list[dict[str, Any]], sources: list[Source], tokenizers: list[Any],
             max_new_tokens: int) -> list[dict[str, Any]]:
    """The prompts whose chat-formatted tokens plus max_new_tokens fit every model's context."""
    prompts = [row["text"] for row in rows]
    keep = [True] * len(prompts)
    for source, tokenizer in zip(sources, tokenizers):
        limit = max_positions(source)
        if limit is None:
            continue
        if max_new_tokens >= limit:
            raise StageFailed(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
                              f"{limit} positions of {checkpoint_name(source)}")
        formatted = [format_prompt(tokenizer, p) for p in prompts]
        lengths = [len(ids) for ids in tokenizer(formatted, add_special_tokens=False)["input_ids"]]
        for i, length in enumerate(lengths):
            keep[i] = keep[i] and length + max_new_tokens <= limit
    kept = [row for row, ok in zip(rows, keep) if ok]
    if len(kept) < len(rows):
        ctx.log(f"prompts: {len(prompts) - len(kept)} left out, too long to leave {max_new_tokens} "
                "new tokens within a model's context", level="warning")
    if not kept:
        raise StageFailed("every prompt is too long for the models' context; lower max_new_tokens")
    return kept


# --- the plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One generate call of one model: `k` responses to each of `prompts`."""

    index: int  # position in this model's plan
    prompts: tuple[int, ...]  # prompt indices
    k: int
    seed: int


def responses_from(model: int, prompt: int, k: int, models: int) -> int:
    """How many of prompt's K responses model writes: response j of prompt i
    comes from model (i + j) mod M."""
    return sum(1 for j in range(k) if (prompt + j) % models == model)


def plan_calls(prompts: int, k: int, models: int, model: int, batch_size: int, seed: int) -> list[Call]:
    """One model's generate calls, in order: prompts grouped by how many
    responses the model writes to each (at most two counts), then cut so a
    call generates at most batch_size responses (at least one prompt)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for prompt in range(prompts):
        count = responses_from(model, prompt, k, models)
        if count:
            groups[count].append(prompt)
    calls: list[Call] = []
    for count in sorted(groups, reverse=True):
        members = groups[count]
        per_call = max(1, batch_size // count)
        for start in range(0, len(members), per_call):
            index = len(calls)
            calls.append(Call(index, tuple(members[start:start + per_call]), count, call_seed(seed, model, index)))
    return calls


def call_seed(seed: int, model: int, call: int) -> int:
    """A distinct, reproducible seed per (model, call): calls seeded alike
    would draw the same random numbers for their rows."""
    return (seed * 1_000_003 + model * 10_007 + call) % (2**63)


# --- the store side ---------------------------------------------------------------------


def _open_batch(ctx: StageContext, spec: SampleSpec, settings: SamplingSettings,
                checkpoints: list[str]) -> tuple[int, defaultdict[tuple[int, str], int]]:
    """This stage's sample batch -- the one an interrupted attempt began, or a
    new one -- and how many responses it holds per (prompt id, checkpoint)."""
    done: defaultdict[tuple[int, str], int] = defaultdict(int)
    earlier = [b for b in ctx.store.list_sample_batches(run_id=ctx.run_id) if b.stage_id == ctx.stage_id]
    if earlier:
        batch_id = earlier[-1].id
        for sample in ctx.store.list_samples(batch_id=batch_id):
            done[(sample.prompt_id, sample.checkpoint or "")] += 1
        return batch_id, done
    name = spec.batch_name or f"{ctx.store.get_run(ctx.run_id).name}/{ctx.stage_name}"
    created = ctx.create_sample_batch(
        name=name,
        settings={**settings.to_dict(), "responses_per_prompt": spec.responses_per_prompt},
        sources=checkpoints,
    )
    if created is None:  # pragma: no cover - the sample stage runs in one process
        raise StageFailed("the sample stage must run in the main process")
    return created, done


def _call_metrics(generated: list[Generated], seconds: float) -> dict[str, float]:
    tokens = sum(g.tokens for g in generated)
    return {
        "sample/tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "sample/mean_length": tokens / len(generated),
        "sample/finished_fraction": sum(g.finished for g in generated) / len(generated),
    }


def _cancelled(stored: int, total: int, batch_id: int) -> StageCancelled:
    return StageCancelled(
        f"stopped after {stored} of {total} responses; they are kept in sample batch {batch_id}, "
        "and resuming the run writes the rest"
    )


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_outputs(ctx: StageContext, batch_id: int, settings: SamplingSettings, k: int) -> None:
    """final/samples.jsonl and final/manifest.json, from the store (so a
    resumed stage writes the whole batch), replaced in one rename."""
    batch = next(b for b in ctx.store.list_sample_batches(run_id=ctx.run_id) if b.id == batch_id)
    samples = ctx.store.list_samples(batch_id=batch_id)
    recorded = {**settings.to_dict(), "responses_per_prompt": k}
    tmp = ctx.final_dir.with_name(f".{ctx.final_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "samples.jsonl").open("w", encoding="utf-8") as out:
        for s in samples:
            out.write(json.dumps({
                "prompt": s.prompt, "response": s.response, "checkpoint": s.checkpoint,
                "prompt_id": s.prompt_id, "sample_id": s.id, "tokens": s.meta.get("tokens"),
                "finished": s.meta.get("finished"), "seed": s.meta.get("seed"), "settings": recorded,
            }, ensure_ascii=False) + "\n")
    # Every response of one call shares that call's seconds: count each call once.
    calls = {(s.checkpoint, s.meta.get("call")): s.meta.get("seconds", 0.0) for s in samples}
    seconds = sum(calls.values())
    tokens = sum(int(s.meta.get("tokens", 0)) for s in samples)
    manifest = {
        "batch_id": batch.id, "batch_name": batch.name, "run_id": ctx.run_id, "stage": ctx.stage_name,
        "settings": recorded, "checkpoints": batch.sources,
        "prompts": len({s.prompt_id for s in samples}), "responses": len(samples),
        "tokens": tokens, "generate_calls": len(calls), "generation_seconds": round(seconds, 4),
        "tokens_per_second": round(tokens / seconds, 2) if seconds else None,
        "finished_fraction": (sum(bool(s.meta.get("finished")) for s in samples) / len(samples)) if samples else None,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if ctx.final_dir.exists():
        shutil.rmtree(ctx.final_dir)
    os.rename(tmp, ctx.final_dir)
