"""Active order against random order: held-out pair accuracy per judgement (#16).

One run, the same seeds for both orders. For each seed:

1. A pool of pairs to judge, built like the demo's rank batch but without a
   model (seconds, not the demo's minutes of SFT and sampling): for PROMPTS
   demo-task prompts of the train split, written responses of graded quality
   (the reference, chatty small talk after it, "The answer is X.", another
   prompt's answer, a hedge "X or Y", "I do not know.", the prompt repeated
   before the answer); those the judge scores within MIN_GAP of one another
   are dropped (a pair the judge cannot order teaches nothing), and every
   pair of up to 3 kept ones becomes a rank item. Stored in a throwaway
   workspace as one sample batch, its items in a random order (the seed's).
2. A simulated annotator judges the whole batch through the store
   (`Feedback.next_item` / `judge`, as the console does): the demo judge,
   or the noisy variant that flips a share of its answers.
   - random order: the items as stored;
   - active order: `ActiveRanker` (the rank stage's code) re-orders the
     unjudged items after every REFRESH judgements.
3. At every tenth of the pool, a fresh ensemble (the same heads, cold, on
   every pair judged so far) is scored on held-out pairs: written responses
   to prompts of the demo's held-out split, ordered by the exact judge.

Printed: the median accuracy over the seeds at each tenth, for each
annotator and order, and how many judgements active order needed to reach
random order's accuracy after all of them.

    .venv/bin/python bench/bench_active.py [--seeds 10 --prompts 200 --flip 0.2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

from engine.demo.task import Task, chatty, generate_tasks, judge_score
from engine.feedback.active import Ensemble, pairs_from_ranking, response_features
from engine.feedback.stored.active_order import ActiveRanker
from store import JudgementOutcome, Store, open_workspace

MIN_GAP = 0.05
PER_PROMPT = 3
REFRESH = 20
STEPS = 10  # accuracy measured at every tenth of the pool


def written(task: Task, same_kind: list[str], rng: random.Random) -> list[str]:
    """Responses of graded quality to one task (see the module doc)."""
    other = rng.choice([answer for answer in same_kind if answer != task.reference])
    return [task.reference, chatty(task.reference, rng), f"The answer is {task.reference}.", other,
            f"{task.reference} or {other}", "I do not know.", f"{task.prompt} {task.reference}"]


def candidates(tasks: list[Task], seed: int) -> dict[str, list[str]]:
    """Up to PER_PROMPT responses per prompt whose judge scores are MIN_GAP apart."""
    rng = random.Random(seed)
    by_kind: dict[str, list[str]] = defaultdict(list)
    for task in tasks:
        by_kind[task.kind].append(task.reference)
    chosen: dict[str, list[str]] = {}
    for task in tasks:
        pool = list(dict.fromkeys(written(task, by_kind[task.kind], rng)))
        rng.shuffle(pool)
        kept: list[tuple[str, float]] = []
        for text in pool:
            score = judge_score(task.prompt, text)
            if all(abs(score - other) >= MIN_GAP for _, other in kept):
                kept.append((text, score))
            if len(kept) == PER_PROMPT:
                break
        if len(kept) >= 2:
            chosen[task.prompt] = [text for text, _ in kept]
    return chosen


def heldout_pairs(count: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Features of held-out responses and their (better, worse) pairs by the exact judge."""
    vectors: list[np.ndarray] = []
    pairs: list[tuple[int, int]] = []
    for prompt, texts in candidates(generate_tasks(count, seed=seed, split="heldout"), seed).items():
        rows = []
        for text in texts:
            rows.append(len(vectors))
            vectors.append(response_features(prompt, text))
        scores = {row: judge_score(prompt, text) for row, text in zip(rows, texts, strict=True)}
        pairs += [(a, b) if scores[a] > scores[b] else (b, a) for a, b in combinations(rows, 2)]
    return np.array(vectors), pairs


def build_batch(store: Store, prompts: int, seed: int) -> int:
    """The pool as a sample batch whose pair items lie in a random order."""
    chosen = candidates(generate_tasks(prompts, seed=seed, split="train"), seed)
    prompt_ids = store.add_prompts([{"text": prompt, "source": "bench"} for prompt in chosen])
    batch = store.create_sample_batch(name="bench-active", settings={"seed": seed}, sources=["written"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": text, "checkpoint": "written"}
                       for pid, texts in zip(prompt_ids, chosen.values(), strict=True) for text in texts])
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for sample in store.list_samples(batch_id=batch.id):
        by_prompt[sample.prompt_id].append(sample.id)
    groups = [(pid, [a, b]) for pid, ids in by_prompt.items() for a, b in combinations(ids, 2)]
    random.Random(seed).shuffle(groups)
    store.feedback.add_items(batch_id=batch.id, groups=groups)
    return batch.id


def simulate(store: Store, batch_id: int, *, active: bool, flip: float, seed: int,
             heldout: tuple[np.ndarray, list[tuple[int, int]]]) -> list[tuple[int, float]]:
    """Judge the whole batch in one order; accuracy at every tenth of it."""
    feedback = store.feedback
    ranker = ActiveRanker(feedback, batch_id, seed=seed) if active else None
    if ranker is not None:
        ranker.refresh()
    total = len(feedback.batch_items(batch_id=batch_id))
    marks = {round(total * k / STEPS) for k in range(1, STEPS + 1)}
    curve: list[tuple[int, float]] = []
    features: dict[int, np.ndarray] = {}
    judged = 0
    while (item := feedback.next_item(batch_id=batch_id, annotator="sim")) is not None:
        a, b = (r.text for r in item.responses)
        better_a = judge_score(item.prompt, a) > judge_score(item.prompt, b)
        # the noisy annotator flips the same items whatever order they come in
        if random.Random(f"{seed}:{item.prompt}:{sorted((a, b))}").random() < flip:
            better_a = not better_a
        feedback.judge(item_id=item.id, annotator="sim", shown=item.shown,
                       outcome=JudgementOutcome.A_BETTER if better_a else JudgementOutcome.B_BETTER)
        judged += 1
        if ranker is not None and judged % REFRESH == 0:
            ranker.refresh()
        if judged in marks:
            curve.append((judged, evaluate(store, batch_id, seed, heldout, features)))
    return curve


def evaluate(store: Store, batch_id: int, seed: int, heldout: tuple[np.ndarray, list[tuple[int, int]]],
             features: dict[int, np.ndarray]) -> float:
    """A cold ensemble on every pair judged so far, scored on the held-out pairs.
    `features` caches each response's (fixed) features from one tenth to the next."""
    prompts, responses = store.feedback.batch_texts(batch_id=batch_id)
    rows: dict[int, int] = {}
    vectors: list[np.ndarray] = []
    pairs: list[tuple[int, int]] = []
    # by item, so both orders fit the same data in the same order once everything is judged
    for judgement in sorted(store.feedback.live_judgements(batch_ids=[batch_id]), key=lambda j: j.item_id):
        for sample_id in judgement.shown:
            if sample_id not in rows:
                rows[sample_id] = len(vectors)
                if sample_id not in features:
                    features[sample_id] = response_features(prompts[judgement.prompt_id], responses[sample_id])
                vectors.append(features[sample_id])
        tiers = [[rows[judgement.ranking[0]]], [rows[judgement.ranking[1]]]]  # type: ignore[index]
        pairs += pairs_from_ranking(tiers)
    model = Ensemble(seed=seed)
    model.fit(np.array(vectors), pairs)
    features, heldout_pairs_ = heldout
    accuracy = model.accuracy(features, heldout_pairs_)
    return 0.0 if accuracy is None else accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="seeds (the median over them is printed)")
    parser.add_argument("--prompts", type=int, default=200, help="train prompts in the pool")
    parser.add_argument("--heldout", type=int, default=150, help="held-out prompts to measure on")
    parser.add_argument("--flip", type=float, default=0.2, help="share of answers the noisy annotator flips")
    args = parser.parse_args()
    started = time.perf_counter()
    curves: dict[tuple[str, str], list[list[tuple[int, float]]]] = defaultdict(list)
    annotators = {"judge": 0.0, f"noisy {args.flip:.0%}": args.flip}
    # the workspaces in memory where there is a tmpfs: a judgement is a committed transaction
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for seed in range(args.seeds):
            heldout = heldout_pairs(args.heldout, seed)
            for name, flip in annotators.items():
                for order in ("random", "active"):
                    workspace = open_workspace(Path(tmp) / f"ws-{seed}-{flip}-{order}")
                    batch_id = build_batch(workspace.store, args.prompts, seed)
                    curves[(name, order)].append(simulate(workspace.store, batch_id, active=order == "active",
                                                          flip=flip, seed=seed, heldout=heldout))
                    workspace.close()
            print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\nheld-out pair accuracy, median of {args.seeds} seeds (refresh every {REFRESH} judgements)")
    for name in annotators:
        random_curve = median_curve(curves[(name, "random")])
        active_curve = median_curve(curves[(name, "active")])
        print(f"\nannotator: {name}")
        print("| judgements | random | active |")
        print("| ---: | ---: | ---: |")
        for (n, r), (_, a) in zip(random_curve, active_curve, strict=True):
            print(f"| {n} | {r:.3f} | {a:.3f} |")
        final_n, final = random_curve[-1]
        reached = next((n for n, a in active_curve if a >= final), None)
        verdict = (f"{reached} judgements ({reached / final_n:.0%} of {final_n})" if reached is not None
                   else "not reached")
        print(f"random's final accuracy {final:.3f}; active order reached it after {verdict}")
    print(f"\n{time.perf_counter() - started:.0f} s")


def median_curve(runs: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The median accuracy at each tenth (pools differ a little by seed: the tenth's index is shown
    as the median count)."""
    steps = min(len(run) for run in runs)
    return [(int(statistics.median(run[k][0] for run in runs)), statistics.median(run[k][1] for run in runs))
            for k in range(steps)]


if __name__ == "__main__":
    main()
