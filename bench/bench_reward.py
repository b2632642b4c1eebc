"""Reward model on the demo task: held-out pair accuracy on judge-ranked data.

The acceptance figure of the reward stage: trained on demo-task rankings by
the demo judge, the reward model orders at least 0.85 of the held-out pairs
as the judge does. Built the way the demo builds its data, every step
through the `rlhf` command in a throwaway workspace:

1. `rlhf run`: an SFT stage (llama-4m from its random init on
   builtin:demo-instructions), then a sample stage: K responses from it to
   each of N demo-task prompts of the train split, at temperature 1.
2. Candidates per prompt: those samples plus written ones of graded quality
   (the reference answer, "The answer is X.", another prompt's answer of the
   same kind, a hedge "X or Y", "I do not know."); duplicates go, and so do
   candidates the judge scores within MIN_GAP of one already kept: a ranking
   cannot say "equally good", so near-equal responses would only give pairs
   ordered by chance. Up to 4 per prompt, stored as one sample batch.
3. `rlhf rank --auto demo`: the demo judge ranks the batch (judge:demo).
4. `rlhf run`: a reward stage from the SFT model on that batch; whole
   prompts are held out (eval_fraction).

Printed: the held-out pair accuracy the stage measured (eval/accuracy, over
every held-out pair), and as a check with plain transformers,
the accuracy of the final folder on candidates built the same way for
prompts of the demo task's held-out split, which neither the SFT nor the
reward model saw.

    .venv/bin/python bench/bench_reward.py [--prompts 600 --sft-steps 400 --steps 600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.demo.task import (
    Task,
    generate_tasks,
    judge_score,
)
from engine.spec.toml_render import render_toml
from store import Store, open_workspace

#: responses per prompt in the ranked batch (InstructGPT ranked 4 to 9)
K = 4
#: candidates closer than this in the judge's score are not both kept (see the module docstring)
MIN_GAP = 0.05
BATCH = "reward-bench"


def rlhf(*args: str, env: dict[str, str]) -> None:
    """Run an `rlhf` command as a user would; stop the bench if it fails."""
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).with_name("rlhf")), *args], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"rlhf {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    print(f"  rlhf {args[0]} {args[1] if len(args) > 1 else ''}: {time.perf_counter() - started:.0f} s", flush=True)


def toml(name: str, stages: dict[str, dict[str, object]]) -> str:
    return render_toml({"name": name, "stages": stages})


def written_candidates(task: Task, same_kind: list[str], rng: random.Random) -> list[str]:
    """Responses of graded quality: right, right but wordy, wrong, hedged, none."""
    other = rng.choice([answer for answer in same_kind if answer != task.reference])
    return [task.reference, f"The answer is {task.reference}.", other, f"{task.reference} or {other}",
            "I do not know."]


def pick(prompt: str, pool: list[str], rng: random.Random) -> list[str]:
    """Up to K distinct responses whose judge scores are at least MIN_GAP apart,
    in random order (the judge's ranking decides their order, not this)."""
    pool = list(dict.fromkeys(text.strip() for text in pool if text.strip()))
    rng.shuffle(pool)
    kept: list[tuple[str, float]] = []
    for text in pool:
        score = judge_score(prompt, text)
        if all(abs(score - other) >= MIN_GAP for _, other in kept):
            kept.append((text, score))
        if len(kept) == K:
            break
    return [text for text, _ in kept]


def candidates_for(tasks: list[Task], samples: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    by_kind: dict[str, list[str]] = defaultdict(list)
    for task in tasks:
        by_kind[task.kind].append(task.reference)
    chosen = {}
    for task in tasks:
        picked = pick(task.prompt, samples.get(task.prompt, []) + written_candidates(task, by_kind[task.kind], rng),
                      rng)
        if len(picked) >= 2:
            chosen[task.prompt] = picked
    return chosen


def store_batch(store: Store, candidates: dict[str, list[str]], sampled: dict[str, set[str]]) -> int:
    """The candidates as one sample batch; `checkpoint` says which were sampled and which written."""
    prompt_ids = store.add_prompts([{"text": prompt, "source": "bench"} for prompt in candidates])
    batch = store.create_sample_batch(name=BATCH, settings={"k": K, "min_gap": MIN_GAP}, sources=["sft", "written"])
    store.add_samples([
        {"prompt_id": pid, "batch_id": batch.id, "response": text,
         "checkpoint": "sft" if text in sampled.get(prompt, set()) else "written"}
        for pid, (prompt, texts) in zip(prompt_ids, candidates.items()) for text in texts
    ])
    return batch.id


def unseen_accuracy(final: Path, count: int, seed: int) -> tuple[float, int]:
    """Pair accuracy of the final folder (plain transformers) against the judge
    on written candidates for prompts of the held-out split."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()

    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    tasks = generate_tasks(count, seed=seed, split="heldout")
    agreed = pairs = 0
    for prompt, texts in candidates_for(tasks, {}, seed).items():
        with torch.no_grad():
            rewards = [model(**tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                tokenize=True, return_dict=True, return_tensors="pt")).logits[0, 0].item() for text in texts]
        judged = [judge_score(prompt, text) for text in texts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                better, worse = (i, j) if judged[i] > judged[j] else (j, i)
                pairs += 1
                agreed += rewards[better] > rewards[worse]
    return agreed / pairs, pairs


def build_ranked_batch(tasks: list[Task], prompts_file: Path, root: Path, env: dict[str, str],
                       options: argparse.Namespace) -> None:
    """Steps 1 to 3 of the module docstring: SFT and samples, candidates, the judge's rankings."""
    spec = root / "sft.toml"
    spec.write_text(toml("bench-sft", {
        "sft": {"kind": "sft", "from": "builtin:llama-4m", "max_steps": options.sft_steps,
                "eval_prompt_count": 0, "seed": options.seed},
        "sample": {"kind": "sample", "from": "sft", "prompts": str(prompts_file), "responses_per_prompt": K,
                   "temperature": 1.0, "max_new_tokens": 24, "seed": options.seed},
    }))
    rlhf("run", str(spec), "--json", env=env)
    ws = open_workspace(root / "ws")
    sampled: dict[str, set[str]] = defaultdict(set)
    for sample in ws.store.list_samples(run_id=ws.store.get_run("bench-sft").id):
        sampled[sample.prompt].add(sample.response.strip())

    candidates = candidates_for(tasks, {p: sorted(texts) for p, texts in sampled.items()}, options.seed)
    batch_id = store_batch(ws.store, candidates, sampled)
    kept = [len(texts) for texts in candidates.values()]
    from_sft = sum(1 for s in ws.store.list_samples(batch_id=batch_id) if s.checkpoint == "sft")
    ws.close()
    print(f"batch {batch_id}: {len(candidates)} prompts, {sum(kept)} responses ({from_sft} sampled from the "
          f"SFT model), {sum(k * (k - 1) // 2 for k in kept)} pairs once ranked", flush=True)

    rlhf("rank", "--auto", "demo", "--batch", BATCH, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=600, help="train-split prompts to rank (at most 933)")
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=600, help="reward stage steps")
    parser.add_argument("--batch-size", type=int, default=16, help="reward stage pairs per step")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--unseen", type=int, default=200, help="held-out-split prompts for the final check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: temporary)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workspace: reuse its SFT model and ranked batch, train only a new reward model")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = options.workspace or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RLHF_WORKSPACE": str(root / "ws"), "RLHF_DEVICES": "cpu"}
        tasks = generate_tasks(options.prompts, seed=options.seed, split="train", repeat=False)
        prompts_file = root / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": t.prompt}) + "\n" for t in tasks))
        started = time.perf_counter()
        if not options.reuse:
            build_ranked_batch(tasks, prompts_file, root, env, options)
        ws = open_workspace(root / "ws")
        sft_stage = next(s for s in ws.store.list_stages(run_id=ws.store.get_run("bench-sft").id) if s.name == "sft")
        sft_final = Path(sft_stage.output_path or "")
        ws.close()

        # 4. The reward model.
        spec = root / "reward.toml"
        spec.write_text(toml("bench-reward", {"reward": {
            "kind": "reward", "from": str(sft_final), "batches": [BATCH], "max_steps": options.steps,
            "batch_size": options.batch_size, "learning_rate": options.learning_rate,
            "eval_fraction": options.eval_fraction, "eval_every": max(1, options.steps // 6),
            "save_every": options.steps, "seed": options.seed,
        }}))
        rlhf("run", str(spec), "--json", env=env)
        ws = open_workspace(root / "ws")
        newest = max((r for r in ws.store.list_runs() if r.name.startswith("bench-reward")), key=lambda r: r.id)
        (stage,) = ws.store.list_stages(run_id=newest.id)

        def last(key: str) -> float:
            return ws.store.metric_series(stage_id=stage.id, key=key)[-1].value

        curve = [(int(p.step), round(p.value, 3))
                 for p in ws.store.metric_series(stage_id=stage.id, key="eval/accuracy/judge:demo")]
        data = stage.config["data"]
        print(f"reward stage: {data['train_pairs']} training pairs, {data['eval_pairs']} held-out pairs "
              f"on {round(options.eval_fraction * data['prompts'])} held-out prompts, {options.steps} steps "
              f"of {options.batch_size} pairs ({stage.device})")
        print(f"held-out accuracy by step: {curve}")
        print(f"held-out pair accuracy: {last('eval/accuracy'):.3f}   (eval/loss {last('eval/loss'):.3f}, "
              f"eval/margin {last('eval/margin'):.2f})")
        final = Path(stage.output_path or "")
        ws.close()
        accuracy, pairs = unseen_accuracy(final, options.unseen, options.seed)
        print(f"unseen held-out-split prompts, written candidates, plain transformers: {accuracy:.3f} "
              f"of {pairs} pairs")
        print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
