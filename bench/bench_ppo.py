"""Time per PPO update on the demo setting, split into generation, scoring and training; RLOO beside it.

The demo setting: the policy is llama-4m fine-tuned on the demo task (an SFT
stage of `--sft-steps` steps from its random init, so its answers end as the
demo's do), the reward model a llama-4m-sized sequence classifier on the
same bpe-4k tokenizer, and PPO's defaults: 32 prompts of
builtin:demo-instructions per update, one response each, up to 32 new
tokens, 4 epochs over minibatches of 8, the value network started from the
reward model. The reward model here is a random init: the time of a
forward pass does not depend on what the weights learned, and the reward
stage would need rankings first (bench_reward.py builds those).

Everything runs through `rlhf run`, as a user runs it; the figures are the
stage's own metrics: time/generation (sampling the responses with the KV
cache), time/scoring (the policy, reference, value and reward model on
them, and the advantages) and time/training (the epochs of minibatch steps),
seconds per update. Printed: the median over updates, the first left out
(it pays one-off warm-up), with the median response length.

RLOO runs in the same `rlhf run`, after PPO, on the same policy, reward
model, prompts and max_new_tokens: 8 prompts x 4 completions = 32
completions per step (PPO: 32 prompts x 1 response per update), one
optimizer step on them (PPO: 4 epochs x 4 minibatches = 16). Its stage
splits each step's seconds the same way (engine/stages/common/online_rl.py:
StepTimer): generation, scoring (the policy's and reference's log-probs, the
reward model, the advantages) and training (forward, backward, step).

On a machine other work shares, torch's default of one thread per core
makes every figure swing by several times; `--threads 1` steadies them.

    .venv/bin/python bench/bench_ppo.py [--sft-steps 150 --updates 9 --threads N]
"""

from __future__ import annotations

import argparse
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

from engine.stages.common import setup as runtime  # noqa: F401  (imported first: it quiets tqdm's bars)

# isort: split

from engine.spec.toml_render import render_toml
from store import StageRead, Store, open_workspace

SPLIT = ("time/generation", "time/scoring", "time/training")


def save_reward_model(folder: Path, cache_dir: Path, seed: int) -> Path:
    """A llama-4m-sized LlamaForSequenceClassification (one output) with bpe-4k."""
    import torch
    from transformers import LlamaForSequenceClassification

    from engine.stages.common.context import Source
    from engine.stages.common.models import preset_config
    from engine.stages.common.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(Source("builtin", "bpe-4k"), cache_dir)
    config = preset_config("llama-4m", tokenizer)
    config.num_labels = 1
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def toml(stages: dict[str, dict[str, object]]) -> str:
    return render_toml({"name": "bench-ppo", "stages": stages})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=150, help="SFT steps of the policy (llama-4m)")
    parser.add_argument("--updates", type=int, default=9, help="PPO updates (the first is left out)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "RLHF_WORKSPACE": str(root / "ws"), "RLHF_CACHE_DIR": str(root / "cache"),
               "RLHF_DEVICES": "cpu"}
        if options.threads:
            env["OMP_NUM_THREADS"] = str(options.threads)
        save_reward_model(root / "reward", root / "cache", options.seed)
        spec = root / "bench.toml"
        spec.write_text(toml({
            "sft": {"kind": "sft", "from": "builtin:llama-4m", "max_steps": options.sft_steps,
                    "eval_prompt_count": 0, "save_every": options.sft_steps, "seed": options.seed},
            "ppo": {"kind": "ppo", "from": "sft", "reward_model": str(root / "reward"),
                    "updates": options.updates, "sample_every": options.updates, "save_every": options.updates,
                    "seed": options.seed},
            "rloo": {"kind": "rloo", "from": "sft", "reward_model": str(root / "reward"),
                     "max_steps": options.updates, "prompts_per_step": 8, "num_generations": 4,
                     "sample_every": options.updates, "save_every": options.updates, "seed": options.seed},
        }))
        started = time.perf_counter()
        result = subprocess.run([str(Path(sys.executable).with_name("rlhf")), "run", str(spec), "--json"],
                                env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"rlhf run failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        print(f"rlhf run (SFT {options.sft_steps} steps, PPO {options.updates} updates, "
              f"RLOO {options.updates} steps): "
              f"{time.perf_counter() - started:.0f} s", flush=True)

        workspace = open_workspace(root / "ws")
        store = workspace.store
        stages = {s.name: s for s in store.list_stages(run_id=store.get_run("bench-ppo").id)}
        ppo, rloo = stages["ppo"], stages["rloo"]
        print_split(store, ppo, f"PPO, {ppo.config['responses_per_update']} responses per update", "update",
                    options.updates)
        print_split(store, rloo, f"RLOO, {rloo.config['completions_per_step']} completions per step", "step",
                    options.updates)
        workspace.close()


def print_split(store: Store, stage: StageRead, title: str, unit: str, count: int) -> None:
    """The median seconds of each part and of the whole, the first update or step left out."""

    def per_unit(key: str) -> list[float]:
        return [p.value for p in store.metric_series(stage_id=stage.id, key=key)][1:]

    split = {key: statistics.median(per_unit(key)) for key in SPLIT}
    total = statistics.median([sum(parts) for parts in zip(*(per_unit(key) for key in SPLIT))])
    length = statistics.median(per_unit("ppo/response_length"))
    print(f"\n{title} ({stage.device}), median of {unit}s 2-{count}; "
          f"response length {length:.1f} tokens (median):")
    for key, seconds in split.items():
        print(f"  {key:<17} {seconds:6.2f} s  ({seconds / total:4.0%})")
    print(f"  {'per ' + unit:<17} {total:6.2f} s")


if __name__ == "__main__":
    main()
