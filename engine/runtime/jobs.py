"""Small jobs built from the stages: the playground's `rlhf generate`, `rlhf rank --auto`, `rlhf score`.

Generation never runs in the process of the CLI or the console: a prompt
becomes a one-stage pipeline of kind `sample`, which the engine runs like
any other (a detached run process, a stage worker, the results in the store).

    spec = generate_spec("runs/00001/sft/final", ["Write a haiku about tests"], k=2)
    run = await engine.submit(spec)
    async for update in engine.follow(run.id): ...
    for answer in await generated_answers(engine, run.id): ...

Two checkpoints side by side: `generate_spec([a, b], prompts, k=2)` asks each
for k responses to every prompt (2k in all, at most 9).

Torch-free, like the rest of the engine's API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserInputError
from engine.runtime.api import Engine
from engine.spec.pipeline import PipelineSpec, parse_spec
from engine.spec.toml_render import render_toml
from store import SampleView

#: the name of the run and of its one stage
GENERATE_RUN = "generate"
RANK_RUN = "rank"
ARENA_RUN = "arena"
SCORE_RUN = "score"
MAX_RESPONSES = 9  # SampleSpec.responses_per_prompt's bound


def generate_spec(
    checkpoint: str | Sequence[str],
    prompts: Sequence[str],
    *,
    k: int = 1,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    seed: int = 0,
    base_dir: str | Path | None = None,
    name: str = GENERATE_RUN,
) -> PipelineSpec:
    """A one-stage `sample` pipeline: `k` responses from each checkpoint to each prompt.

    A checkpoint is written as in a spec: a folder (relative ones start at
    `base_dir`, default the current folder), a hub id, `builtin:NAME`.
    Raises SpecError (a UserInputError) naming the field at fault."""
    checkpoints = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
    if not checkpoints:
        raise UserInputError("generate: name at least one checkpoint")
    if not prompts:
        raise UserInputError("generate: give at least one prompt")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserInputError(f"generate: k must be a whole number of responses, at least 1, got {k!r}")
    if k * len(checkpoints) > MAX_RESPONSES:
        raise UserInputError(
            f"generate: {k} responses from each of {len(checkpoints)} checkpoints make "
            f"{k * len(checkpoints)} per prompt; at most {MAX_RESPONSES}"
        )
    fields = {
        "kind": "sample",
        "from": checkpoints[0] if len(checkpoints) == 1 else checkpoints,
        "prompts": list(prompts),
        "responses_per_prompt": k * len(checkpoints),
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    return _job_spec(name, {GENERATE_RUN: fields}, source="rlhf generate", base_dir=base_dir)


def rank_spec(
    batch: int | str,
    *,
    judge: str | None,
    judgements_per_item: int = 1,
    max_responses: int | None = None,
    order: str = "batch",
    refresh_every: int | None = None,
    name: str = RANK_RUN,
) -> PipelineSpec:
    """A one-stage `rank` pipeline over a stored batch: `rlhf rank --auto JUDGE`
    (with a judge), or a run that waits for people to finish the batch; with
    `order = "active"` it also keeps the batch's serving order (re-ordered
    after every `refresh_every` judgements)."""
    fields = {"kind": "rank", "batch": str(batch), "judgements_per_item": judgements_per_item,
              "judge": judge, "max_responses": max_responses,  # None: left out, the spec's default
              "order": order, "refresh_every": refresh_every}
    return _job_spec(name, {RANK_RUN: fields}, source="rlhf rank")


def arena_spec(
    checkpoints: Sequence[str],
    *,
    prompts: str | None = None,
    max_prompts: int = 50,
    judge: str | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 64,
    seed: int = 0,
    base_dir: str | Path | None = None,
    name: str = ARENA_RUN,
) -> PipelineSpec:
    """Blind comparisons: every checkpoint answers each prompt once (a `sample`
    stage), and the answers are compared in pairs of different checkpoints (a
    `rank` stage with `pairwise`), by a judge or by people.

    `prompts` (a file, a hub dataset, `builtin:demo-prompts`) is the user's to
    name: left out, the sample stage asks for it, unless every checkpoint is a
    built-in demo model."""
    if len(checkpoints) < 2:
        raise UserInputError("arena: name two or more checkpoints to compare")
    if len(checkpoints) > MAX_RESPONSES:
        raise UserInputError(f"arena: at most {MAX_RESPONSES} checkpoints at once, got {len(checkpoints)}")
    sample: dict[str, object] = {
        "kind": "sample", "from": list(checkpoints), "max_prompts": max_prompts,
        "responses_per_prompt": len(checkpoints), "temperature": temperature, "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    if prompts is not None:
        sample["prompts"] = prompts
    rank = {"kind": "rank", "from": "sample", "pairwise": True, "judge": judge}  # no judge: people rank
    return _job_spec(name, {"sample": sample, "rank": rank}, source="rlhf arena", base_dir=base_dir)


def score_spec(
    checkpoint: str,
    batch: int | str,
    *,
    batch_size: int = 32,
    base_dir: str | Path | None = None,
    name: str = SCORE_RUN,
) -> PipelineSpec:
    """A one-stage `score` pipeline: the reward model at `checkpoint` (a folder,
    relative ones starting at `base_dir`, or a hub id) scores every response
    of a stored batch, as `rlhf score` runs it."""
    fields: dict[str, object] = {"kind": "score", "from": checkpoint, "batch": str(batch), "batch_size": batch_size}
    return _job_spec(name, {SCORE_RUN: fields}, source="rlhf score", base_dir=base_dir)


def _job_spec(name: str, stages: Mapping[str, Mapping[str, object]], *, source: str,
              base_dir: str | Path | None = None) -> PipelineSpec:
    """The pipeline `name` of these stages, written as TOML and parsed like a spec file,
    so a bad value (nan too) is a SpecError naming its stage and field."""
    text = render_toml({"name": name, "stages": stages})
    return parse_spec(text, source=source, base_dir=Path(base_dir or Path.cwd()))


@dataclass(frozen=True)
class Answer:
    """One response of a generate run, with the prompt and checkpoint it belongs to."""

    prompt: str
    checkpoint: str
    response: str
    tokens: int
    finished: bool  # ended by itself, rather than at max_new_tokens


async def generated_samples(engine: Engine, run: int | str) -> list[SampleView]:
    """The stored responses of a run (every sample stage's), in the order written."""
    row = await engine.get_run(run)
    return await asyncio.to_thread(engine.store.list_samples, run_id=row.id)


async def generated_answers(engine: Engine, run: int | str) -> list[Answer]:
    """A generate run's responses, ordered by prompt (in the order given), then
    by checkpoint (in the order given), then as generated."""
    row = await engine.get_run(run)
    samples = await asyncio.to_thread(engine.store.list_samples, run_id=row.id)
    config: dict[str, object] = next(iter(row.spec.get("stages", {}).values()), {})
    given_prompts, given_models = config.get("prompts"), config.get("from")
    prompts = given_prompts if isinstance(given_prompts, list) else []
    models = given_models if isinstance(given_models, list) else [given_models]
    prompt_order = {text: i for i, text in enumerate(prompts)}
    model_order = {_checkpoint_of(ref): i for i, ref in enumerate(models) if isinstance(ref, str)}
    ordered = sorted(
        enumerate(samples),
        key=lambda item: (prompt_order.get(item[1].prompt, len(prompt_order)),
                          model_order.get(item[1].checkpoint or "", len(model_order)), item[0]),
    )
    return [
        Answer(prompt=s.prompt, checkpoint=s.checkpoint or "", response=s.response,
               tokens=int(s.meta.get("tokens", 0)), finished=bool(s.meta.get("finished")))
        for _, s in ordered
    ]


def _checkpoint_of(ref: str) -> str:
    """What a sample records as its checkpoint for a canonical model reference
    (engine.stages.common.context.checkpoint_name, without importing torch)."""
    scheme, _, value = ref.partition(":")
    return value if scheme == "path" else ref


__all__ = ["Answer", "arena_spec", "generate_spec", "generated_answers", "generated_samples", "rank_spec", "score_spec"]
