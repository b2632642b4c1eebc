"""Ranking: a sample batch judged by people in the console, or by an automatic judge.

`run(ctx)` finds the batch (the sample stage named in `from`, or a stored
batch named in `batch`), makes it rankable (one item per prompt, each going to
`judgements_per_item` different annotators), and then either

- lets the judge rank every item that still needs a verdict, committing each
  as it goes (a cancelled stage keeps what it judged; a resumed one carries on), or
- waits for people: it polls the batch's progress, shows it as the stage's
  progress, and succeeds once `wait_for` of the judgements are in. It holds
  no device slot while it waits, so other runs train meanwhile.

The output folder `final/manifest.json` names the batch and counts its
judgements, so later stages (the reward model) can name this stage as data.
With `order = "active"` the stage also keeps the batch's serving order: a
small ensemble over cheap text features (engine.feedback.active, numpy)
orders the items, at the start and after every `refresh_every` verdicts.
Needs no torch: ranking is text and the store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter

from engine.errors import StageCancelled, StageFailed
from engine.feedback.judges import load_judge
from engine.feedback.stored.active_order import ActiveRanker
from engine.feedback.stored.auto_rank import auto_rank
from engine.stages.common.context import StageContext
from engine.stages.common.prologue import stage_spec
from engine.stages.rank.spec import RankSpec
from store import Feedback, NotFound

#: how often a stage waiting for people looks at the batch's progress
POLL_SECONDS = 2.0


def run(ctx: StageContext) -> None:
    spec = stage_spec(ctx, RankSpec)
    feedback: Feedback = ctx.store.feedback

    batch_id = _find_batch(ctx, spec)
    items = feedback.items_from_batch(
        batch_id=batch_id, needed=spec.judgements_per_item, max_responses=spec.max_responses,
        pairwise=spec.pairwise,
    )
    ctx.set_resolved_config({
        "batch_id": batch_id, "items": items, "judge": spec.judge,
        "judgements_per_item": spec.judgements_per_item,
    })
    ctx.log(f"batch {batch_id}: {items} items, {spec.judgements_per_item} judgement(s) each")

    ranker = _active_ranker(ctx, feedback, batch_id, spec)
    if spec.judge is not None:
        judge = load_judge(spec.judge)
        total = feedback.progress(batch_id=batch_id).total

        def report(_judged: int) -> None:
            ctx.set_progress(feedback.progress(batch_id=batch_id).done, total)
            if ranker is not None:
                ranker.maybe_refresh()

        judged = auto_rank(feedback, batch_id=batch_id, judge=judge, on_item=report, should_stop=ctx.should_stop)
        ctx.log(f"{judge.annotator} judged {judged} items")
        if ctx.should_stop():
            raise StageCancelled(f"cancelled after the judge ranked {judged} items; resume to go on")
    else:
        _wait_for_people(ctx, feedback, batch_id, spec.wait_for, ranker)

    _log_outcomes(ctx, feedback, batch_id)
    _write_manifest(ctx, feedback, batch_id)


def _find_batch(ctx: StageContext, spec: RankSpec) -> int:
    batches = ctx.store.list_sample_batches()
    if spec.from_ is not None:
        stage_name = spec.from_.removeprefix("stage:")
        stage = next((s for s in ctx.store.list_stages(run_id=ctx.run_id) if s.name == stage_name), None)
        found = [b for b in batches if stage is not None and b.stage_id == stage.id]
        if not found:
            raise StageFailed(f"stage {stage_name!r} stored no sample batch: `from` must name a sample stage")
        return found[-1].id
    assert spec.batch is not None
    by_id = [b for b in batches if spec.batch.isdigit() and b.id == int(spec.batch)]
    by_name = [b for b in batches if b.name == spec.batch]
    found = by_id or by_name
    if not found:
        known = ", ".join(f"{b.id} ({b.name})" for b in batches[-5:]) or "none yet"
        raise StageFailed(f"no sample batch {spec.batch!r} in this workspace (newest: {known})")
    return found[-1].id


class _Refresher:
    """The active order's ranker and when it refreshes next: after every
    `refresh_every` new verdicts, or never (ordered once at the start)."""

    def __init__(self, ctx: StageContext, ranker: ActiveRanker, refresh_every: int | None) -> None:
        self.ctx, self.ranker, self.refresh_every = ctx, ranker, refresh_every
        self.at = self._refresh()

    def _refresh(self) -> int:
        started = time.perf_counter()
        state = self.ranker.refresh()
        metrics = {"active/judgements": float(state.judgements),
                   "active/refresh_seconds": time.perf_counter() - started}
        if state.heldout_accuracy is not None:
            metrics["active/heldout_accuracy"] = state.heldout_accuracy
        self.ctx.log_metrics(state.judgements, metrics)
        return self.ranker.feedback.progress(batch_id=self.ranker.batch_id).done

    def maybe_refresh(self) -> None:
        if self.refresh_every is None:
            return
        # verdicts counted cheaply (one aggregate query): this runs on every poll
        if self.ranker.feedback.progress(batch_id=self.ranker.batch_id).done >= self.at + self.refresh_every:
            self.at = self._refresh()


def _active_ranker(ctx: StageContext, feedback: Feedback, batch_id: int, spec: RankSpec) -> _Refresher | None:
    if spec.order != "active":
        return None
    refresher = _Refresher(ctx, ActiveRanker(feedback, batch_id, seed=spec.seed), spec.refresh_every)
    ctx.log(f"batch {batch_id} served in active order"
            + (f", re-ordered every {spec.refresh_every} judgements" if spec.refresh_every else ""))
    return refresher


def _wait_for_people(ctx: StageContext, feedback: Feedback, batch_id: int, share: float,
                     ranker: _Refresher | None = None) -> None:
    announced = False
    while True:
        progress = feedback.progress(batch_id=batch_id)
        ctx.set_progress(progress.done, progress.total)
        if ranker is not None:
            ranker.maybe_refresh()
        if progress.done >= share * progress.total:
            return
        if not announced:
            ctx.log(f"waiting for people to rank batch {batch_id}: `rlhf rank --batch {batch_id}` "
                    "or the console's rank screen")
            announced = True
        if ctx.should_stop():
            raise StageCancelled(f"cancelled with {progress.done} of {progress.total} judgements in")
        ctx.flush()
        time.sleep(POLL_SECONDS)


def _log_outcomes(ctx: StageContext, feedback: Feedback, batch_id: int) -> None:
    """The batch's verdicts by outcome: a judge that calls everything a tie shows here."""
    live = feedback.live_judgements(batch_ids=[batch_id])
    counts = Counter(j.outcome for j in live)
    total = max(1, len(live))
    ctx.log_metrics(0, {"rank/judgements": float(len(live)),
                        **{f"rank/share_{outcome}": count / total for outcome, count in counts.items()}})
    ctx.flush()


def _write_manifest(ctx: StageContext, feedback: Feedback, batch_id: int) -> None:
    if not ctx.is_main_process:
        return
    progress = feedback.progress(batch_id=batch_id)
    live = feedback.live_judgements(batch_ids=[batch_id])
    try:
        batch = next(b for b in ctx.store.list_sample_batches() if b.id == batch_id)
    except StopIteration:
        raise NotFound(f"sample batch {batch_id} vanished") from None
    manifest = {
        "batch_id": batch_id, "batch_name": batch.name, "run_id": ctx.run_id, "stage": ctx.stage_name,
        "items": progress.items, "judgements": len(live), "annotators": sorted({j.annotator for j in live}),
        "outcomes": dict(Counter(j.outcome for j in live)),
    }
    tmp = ctx.final_dir.with_name(f".{ctx.final_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if ctx.final_dir.exists():
        shutil.rmtree(ctx.final_dir)
    os.rename(tmp, ctx.final_dir)
