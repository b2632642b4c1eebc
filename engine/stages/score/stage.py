"""Scoring: a reward model scores every response of a sample batch, and the scores go to the store.

`run(ctx)` reads top to bottom: find the batch and the reward model, skip
the responses this model has scored already (so a resumed or repeated
stage scores only what is left), load the model, score in batches, storing
each batch of scores as soon as it is computed; then compare the scores with
the batch's judgements (engine/recipe/reward_agreement.py) and write a summary.

Each response is framed exactly as the reward stage framed its pairs: the
prompt as a user turn and the response as the assistant's, in the
tokenizer's chat template, ending with the end-of-turn token where the
score is read. A response longer than `max_length` keeps its end.

Scores are recorded under the model's name (its folder, or `hub:ID`), so
several reward models can score one batch. The output `final/manifest.json`
holds the summary: the mean score and the agreement with people and judges.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common.prologue import begin

# isort: split

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from engine.errors import StageCancelled, StageFailed
from engine.recipe.reward_agreement import BatchScores, batch_scores
from engine.stages.common.context import Source, StageContext, checkpoint_name
from engine.stages.common.inference import dtype_for
from engine.stages.common.tokenizer import CHAT_TEMPLATE, load_tokenizer
from engine.stages.score.spec import ScoreSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, ScoreSpec)
    scores = ctx.store.scores

    # -- what to score ---------------------------------------------------------
    source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
    scorer = checkpoint_name(source)
    batch_id = find_batch(ctx, spec)
    samples = ctx.store.list_samples(batch_id=batch_id)
    if not samples:
        raise StageFailed(f"sample batch {batch_id} has no responses to score")
    done = scores.values_for([s.id for s in samples], scorer=scorer)
    todo = [s for s in samples if s.id not in done]
    ctx.set_resolved_config(
        {"scorer": scorer, "source": f"{source.kind}:{source.value}", "batch_id": batch_id,
         "responses": len(samples), "already_scored": len(done), "batch_size": spec.batch_size,
         "max_length": spec.max_length, "dtype": str(dtype_for(hardware.precision)).removeprefix("torch.")},
        device=hardware.describe(),
    )
    ctx.log(f"batch {batch_id}: {len(samples)} responses, {len(todo)} to score with {scorer}")
    ctx.set_progress(len(done), len(samples))

    # -- score -----------------------------------------------------------------
    if todo:
        tokenizer = load_tokenizer(source, ctx.cache_dir)
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHAT_TEMPLATE  # as the reward stage does for such a tokenizer
            ctx.log("the tokenizer has no chat template: using the built-in one")
        model = load_reward_model(source, dtype=dtype_for(hardware.precision), device=hardware.device)
        scored = len(done)
        for start in range(0, len(todo), spec.batch_size):
            if ctx.should_stop():
                raise StageCancelled(f"cancelled with {scored} of {len(samples)} responses scored; resume to go on")
            chunk = todo[start:start + spec.batch_size]
            values = score_responses(model, tokenizer, [(s.prompt, s.response) for s in chunk],
                                     max_length=spec.max_length)
            scores.add_scores(scorer=scorer, values={s.id: v for s, v in zip(chunk, values)})
            scored += len(chunk)
            ctx.set_progress(scored, len(samples))

    # -- summary ---------------------------------------------------------------
    summary = batch_scores(ctx.store, batch_id=batch_id, scorer=scorer)
    metrics = {"score/mean": summary.mean, "score/agreement_people": summary.people.share,
               "score/agreement_judges": summary.judges.share}
    ctx.log_metrics(0, {key: value for key, value in metrics.items() if value is not None})
    ctx.log(describe(summary))
    ctx.flush()
    _write_manifest(ctx, summary)


def find_batch(ctx: StageContext, spec: ScoreSpec) -> int:
    """The batch of the sample (or rank) stage named in `samples`, or the stored one named in `batch`."""
    if spec.samples is not None:
        stage_name = spec.samples.removeprefix("stage:")
        manifest = Path(ctx.resolve(spec.samples).value) / "manifest.json"
        try:
            return int(json.loads(manifest.read_text(encoding="utf-8"))["batch_id"])
        except (OSError, ValueError, KeyError):
            raise StageFailed(f"stage {stage_name!r} is not a sample or rank stage (no batch in {manifest})") from None
    from store import NotFound

    try:
        return ctx.store.feedback.find_batch(spec.batch)
    except NotFound as exc:
        raise StageFailed(str(exc)) from None


def load_reward_model(source: Source, *, dtype: torch.dtype, device: str) -> PreTrainedModel:
    """A sequence-classification model with one output, in eval mode. A causal
    LM would load too, with a random head giving random scores: refused."""
    where = source.value
    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot read the model config of {where}: {exc}") from exc
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures) or config.num_labels != 1:
        raise StageFailed(
            f"{where} is not a reward model ({', '.join(architectures) or 'no architecture'} with "
            f"{config.num_labels} output(s)): name the output of a reward stage"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(where, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot load the reward model {where}: {exc}") from exc
    return model.to(device).eval()


@torch.inference_mode()
def score_responses(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], *,
    max_length: int,
) -> list[float]:
    """The reward of each (prompt, response), framed as in training: a user
    turn and an assistant turn in the chat template, tokenized the way TRL's
    RewardTrainer tokenizes a conversation, padded on the right."""
    sequences = []
    for prompt, response in pairs:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        sequences.append(list(ids)[-max_length:])  # the end holds the token the score is read at
    width = max(len(ids) for ids in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in sequences])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in sequences])
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    return logits[:, 0].float().tolist()


def describe(summary: BatchScores) -> str:
    """One line for the log: the mean, and agreement with people and judges."""
    line = f"batch {summary.batch_id}: {summary.scored} responses scored"
    if summary.mean is not None:
        line += f", mean {summary.mean:.3f}"
    for who, found in (("people", summary.people), ("judges", summary.judges)):
        if found.share is not None:
            line += f"; agrees with {who} on {found.share:.0%} of {found.pairs} pairs"
    return line


def _write_manifest(ctx: StageContext, summary: BatchScores) -> None:
    tmp = ctx.final_dir.with_name(f".{ctx.final_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {**summary.to_json(), "run_id": ctx.run_id, "stage": ctx.stage_name}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if ctx.final_dir.exists():
        shutil.rmtree(ctx.final_dir)
    os.rename(tmp, ctx.final_dir)
