"""Rejection sampling: the best of each prompt's K answers, kept for SFT.

`run(ctx)` reads top to bottom: find the batch of answers and what scores
them (the reward model a score stage scored them with, read from the
store; a judge asked here; or people's rankings of the batch), choose the
best answer per prompt (engine/stages/common/best_of.py: highest score,
ties to the answer generated first, nothing from a prompt whose best is
below `threshold`), then store the chosen answers and write them for an
sft stage.

The chosen answers are stored as a sample batch of their own (RUN/STAGE),
one answer per prompt, each with the model that wrote it and, in its meta,
why it was chosen (`why`: "best of 4 by ...: 0.93, next best 0.41", the
score, the runner-up's score, the answer it copies). The console shows
them where it shows any batch's samples. `final/chosen.jsonl` holds
prompt / completion rows (plus score and why), which an sft stage reads as
its data: `data = "THIS STAGE"`.

No model loads here (the scores are the score stage's, or a rule-based
judge's), so the stage waits for no device.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

from engine.errors import StageFailed
from engine.feedback.judges import Scorer, load_judge
from engine.feedback.stored.selection import Selection, selected_judgements
from engine.stages.common.best_of import Candidate, Choice, choose_best, ranking_scores
from engine.stages.common.context import StageContext
from engine.stages.common.prologue import stage_spec
from engine.stages.rejection.spec import RejectionSpec
from store import NotFound, SampleView

#: what the sft stage reads (a folder's record files); nothing else of that kind goes into final/
CHOSEN_FILE = "chosen.jsonl"


def run(ctx: StageContext) -> None:
    spec = stage_spec(ctx, RejectionSpec)

    # -- the answers and their scores ------------------------------------------
    batch_id, stored_scorer = _batch_and_scorer(ctx, spec)
    samples = ctx.store.list_samples(batch_id=batch_id)
    if not samples:
        raise StageFailed(f"sample batch {batch_id} has no answers to choose from")
    if spec.judge is not None:
        judge = load_judge(spec.judge)
        scorer = judge.annotator
        scores = _judge_scores(judge.score, samples)
    elif spec.rankings:
        scorer = "people's rankings"
        scores = _ranking_scores(ctx, batch_id)
        if not scores:
            raise StageFailed(f"batch {batch_id} has no rankings by people yet: rank it (rlhf rank), then run this "
                              "stage again")
    else:
        assert stored_scorer is not None  # _batch_and_scorer fails without one
        scorer = stored_scorer
        scores = ctx.store.scores.values_for([s.id for s in samples], scorer=scorer)
        if not scores:
            raise StageFailed(f"no answer of batch {batch_id} has a score by {scorer}: run its score stage first")
    ctx.set_resolved_config({"batch_id": batch_id, "scorer": scorer, "threshold": spec.threshold,
                             "answers": len(samples), "scored": len(scores)})

    # -- choose ----------------------------------------------------------------
    choices, left_out = choose_best((Candidate(s.prompt_id, s.id, scores.get(s.id)) for s in samples),
                                    threshold=spec.threshold)
    prompts = len(choices) + len(left_out)
    ctx.log(f"batch {batch_id}: {len(samples)} answers to {prompts} prompts scored by {scorer}; the best of "
            f"{len(choices)} prompts kept, {len(left_out)} left out"
            + (f" (best below {spec.threshold})" if spec.threshold is not None else ""))
    if not choices:
        raise StageFailed(f"no prompt has an answer scoring at least {spec.threshold}: nothing for SFT to learn; "
                          "lower threshold, or sample more answers")
    ctx.log_metrics(0, {
        "rejection/prompts_kept": len(choices), "rejection/prompts_left_out": len(left_out),
        "rejection/mean_chosen_score": statistics.fmean(c.score for c in choices),
        "rejection/mean_score": statistics.fmean(scores.values()),
    })

    # -- store and write -------------------------------------------------------
    by_id = {s.id: s for s in samples}
    _store_chosen(ctx, spec, choices, by_id, scorer)
    _write_chosen(ctx, choices, by_id, scorer)
    ctx.flush()


def _batch_and_scorer(ctx: StageContext, spec: RejectionSpec) -> tuple[int, str | None]:
    """The batch the answers are in, and the reward model whose stored scores choose (None: a judge does)."""
    if spec.batch is not None:
        try:
            return ctx.store.feedback.find_batch(spec.batch), spec.scorer
        except NotFound as exc:
            raise StageFailed(str(exc)) from None
    assert spec.samples is not None  # the spec asks for one of them
    stage_name = spec.samples.removeprefix("stage:")
    manifest_path = Path(ctx.resolve(spec.samples).value) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        batch_id = int(manifest["batch_id"])
    except (OSError, ValueError, KeyError):
        raise StageFailed(f"stage {stage_name!r} is not a sample or score stage (no batch in {manifest_path})") \
            from None
    scorer = manifest.get("scorer")
    if spec.judge is None and not spec.rankings and not isinstance(scorer, str):
        raise StageFailed(f"stage {stage_name!r} scored nothing: name a score stage in `samples`, or set `judge` "
                          "or `rankings`")
    return batch_id, scorer if spec.judge is None and not spec.rankings else None


def _ranking_scores(ctx: StageContext, batch_id: int) -> dict[int, float]:
    """Each ranked answer's score from people's live verdicts on the batch (best_of.ranking_scores)."""
    verdicts: list[tuple[list[list[int]] | None, list[int]]] = []
    for judgement in selected_judgements(ctx.store, Selection(batches=(str(batch_id),), annotators="people")):
        ids = [int(response.id) for response in judgement.responses]
        tiers = judgement.tiers()
        if judgement.outcome == "both_bad":
            verdicts.append((None, ids))
        elif tiers is not None:
            verdicts.append(([[ids[index] for index in tier] for tier in tiers], ids))
    return ranking_scores(verdicts)


def _judge_scores(score: Scorer, samples: list[SampleView]) -> dict[int, float]:
    """Each answer's score by the judge, asked once per prompt with all its answers."""
    by_prompt: dict[int, list[SampleView]] = {}
    for sample in samples:
        by_prompt.setdefault(sample.prompt_id, []).append(sample)
    values: dict[int, float] = {}
    for answers in by_prompt.values():
        for sample, value in zip(answers, score(answers[0].prompt, [s.response for s in answers])):
            values[sample.id] = float(value)
    return values


def _store_chosen(ctx: StageContext, spec: RejectionSpec, choices: list[Choice], by_id: dict[int, SampleView],
                  scorer: str) -> None:
    """The chosen answers as a batch of their own (once: a rerun finds it), each saying why."""
    if any(b.stage_id == ctx.stage_id for b in ctx.store.list_sample_batches(run_id=ctx.run_id)):
        return
    name = spec.batch_name or f"{ctx.store.get_run(ctx.run_id).name}/{ctx.stage_name}"
    batch_id = ctx.create_sample_batch(name=name, settings={"rejection": {"scorer": scorer,
                                                                          "threshold": spec.threshold}},
                                       sources=sorted({by_id[c.sample_id].checkpoint or "" for c in choices}))
    for checkpoint in sorted({by_id[c.sample_id].checkpoint for c in choices}, key=lambda c: c or ""):
        ctx.log_samples([
            {"prompt_id": c.prompt_id, "response": by_id[c.sample_id].response,
             "meta": {"why": c.why(scorer), "score": c.score, "runner_up": c.runner_up, "candidates": c.candidates,
                      "scorer": scorer, "chosen_from": c.sample_id}}
            for c in choices if by_id[c.sample_id].checkpoint == checkpoint
        ], checkpoint=checkpoint, batch_id=batch_id)


def _write_chosen(ctx: StageContext, choices: list[Choice], by_id: dict[int, SampleView], scorer: str) -> None:
    """final/chosen.jsonl, written whole or not at all."""
    tmp = ctx.final_dir.with_name(f".{ctx.final_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / CHOSEN_FILE).open("w", encoding="utf-8") as out:
        for choice in choices:
            sample = by_id[choice.sample_id]
            out.write(json.dumps({"prompt": sample.prompt, "completion": sample.response, "score": choice.score,
                                  "why": choice.why(scorer), "sample_id": sample.id}, ensure_ascii=False) + "\n")
    if ctx.final_dir.exists():
        shutil.rmtree(ctx.final_dir)
    os.rename(tmp, ctx.final_dir)
