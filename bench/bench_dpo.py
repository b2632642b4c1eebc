"""DPO on the demo task: does it beat the SFT model it starts from?

One `rlhf run` of the InstructGPT-style pipeline, exactly as users run it:

    pretrain -> sft -> sample (K answers to each of N training prompts)
             -> rank (the demo judge, as judge:demo) -> dpo (on those judgements)

and then, from the store, side by side on the same held-out demo prompts
(`builtin:demo-prompts`, never trained on by SFT or sampled for DPO):

- the judge's mean score, greedy: the SFT model (the dpo stage's answers at
  step 0, which are the SFT model's; the sft stage's own last score is
  printed too, as a check) against the DPO model (its answers after the last step);
- the held-out log-prob margin, mean over the pairs of the prompts the dpo
  stage held out of training of log p(chosen) - log p(rejected): at step 0
  (the SFT model) and after the last step;
- the judge's mean score of sampled answers (`--sampled N` per held-out
  prompt and model, temperature 1: the distribution DPO was trained on),
  from a second `rlhf run` in which both models answer in one sample stage.

`--reuse RUN` skips pretrain, SFT, sampling and ranking: the dpo stage starts
from that earlier run's SFT model and learns from its ranked batch (same
workspace), so DPO settings can be compared on the same pairs; with
`--resample` it samples and ranks anew from that SFT model (other K,
temperature or prompt count).

    .venv/bin/python bench/bench_dpo.py [--workspace DIR] [--pretrain-steps 300 --sft-steps 400]
        [--prompts 512 --k 4 --temperature 1.0] [--beta 0.1 --learning-rate 5e-5 --dpo-steps 200]
        [--reuse RUN [--resample]] [--sampled 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.demo import task as demo_task
from store import Workspace, open_workspace

#: all 200 held-out demo prompts, answered greedily by SFT and DPO alike
HELD_OUT_PROMPTS = 200


def pipeline_spec(options: argparse.Namespace) -> str:
    """The whole pipeline; pretrain and SFT as the demo (engine/demo/pipeline.py) has them."""
    return f"""\
name = "bench-dpo"

[stages.pretrain]
kind = "pretrain"
from = "builtin:llama-4m"
tokenizer = "builtin:bpe-4k"
data = "builtin:stdlib-docs"
block_size = 128
batch_size = 8
max_steps = {options.pretrain_steps}
learning_rate = 2e-3
warmup_steps = 20
eval_every = {options.pretrain_steps}
save_every = {options.pretrain_steps}

[stages.sft]
kind = "sft"
from = "pretrain"
data = "builtin:demo-instructions"
max_steps = {options.sft_steps}
batch_size = 32
learning_rate = 1e-3
eval_every = {options.sft_steps}
save_every = {options.sft_steps}
eval_prompts = "builtin:demo-prompts"
eval_prompt_count = {HELD_OUT_PROMPTS}
sample_every = {options.sft_steps}

{ranked_samples(options, source='"sft"')}
{dpo_table(options, source='"sft"', preferences='preferences = ["rank"]')}"""


def ranked_samples(options: argparse.Namespace, *, source: str) -> str:
    return f"""\
[stages.sample]                     # K answers to training prompts (never held-out ones)
kind = "sample"
from = {source}
prompts = "builtin:demo-instructions"
max_prompts = {options.prompts}
responses_per_prompt = {options.k}
temperature = {options.temperature}
max_new_tokens = 32

[stages.rank]
kind = "rank"
from = "sample"
judge = "demo"
"""


def dpo_table(options: argparse.Namespace, *, source: str, preferences: str) -> str:
    return f"""\
[stages.dpo]
kind = "dpo"
from = {source}
{preferences}
annotators = "judges"
beta = {options.beta}
loss_type = "{options.loss_type}"
sft_weight = {options.sft_weight}
max_steps = {options.dpo_steps}
batch_size = {options.batch_size}
learning_rate = {options.learning_rate}
warmup_steps = {max(1, options.dpo_steps // 10)}
eval_every = {max(1, options.dpo_steps // 4)}
save_every = {options.dpo_steps}
eval_prompts = "builtin:demo-prompts"
eval_prompt_count = {HELD_OUT_PROMPTS}
sample_every = {options.dpo_steps}
"""


def reuse_spec(workspace: Workspace, run_id: int, options: argparse.Namespace) -> str:
    """On an earlier bench run's SFT model: a dpo stage alone on that run's
    ranked batch, or (--resample) new samples, ranked, then DPO on them."""
    stages = {s.name: s for s in workspace.store.list_stages(run_id=run_id)}
    sft_final = json.dumps(stages["sft"].output_path)
    if options.resample:
        return 'name = "bench-dpo-resample"\n\n' + ranked_samples(options, source=sft_final) + "\n" + dpo_table(
            options, source=sft_final, preferences='preferences = ["rank"]')
    manifest = json.loads((Path(stages["rank"].output_path or "") / "manifest.json").read_text())
    return 'name = "bench-dpo-reuse"\n\n' + dpo_table(
        options, source=sft_final, preferences=f'batches = ["{manifest["batch_id"]}"]')


def sampled_comparison_spec(workspace: Workspace, run_id: int, samples: int) -> str:
    """The SFT and DPO models each answer every held-out prompt `samples`
    times at temperature 1 (one sample stage, the models sharing the responses)."""
    stages = {s.name: s for s in workspace.store.list_stages(run_id=run_id)}
    sft = stages["dpo"].config["model"]["source"].removeprefix("path:")
    dpo = stages["dpo"].output_path
    return f"""\
name = "bench-dpo-sampled"

[stages.compare]
kind = "sample"
from = [{json.dumps(sft)}, {json.dumps(dpo)}]
prompts = "builtin:demo-prompts"
responses_per_prompt = {2 * samples}
temperature = 1.0
max_new_tokens = 32
"""


def sampled_scores(workspace: Workspace, run_id: int) -> dict[str, float]:
    """The judge's mean over each model's sampled answers, by model folder."""
    stage = workspace.store.list_stages(run_id=run_id)[0]
    scores: dict[str, list[float]] = {}
    for sample in workspace.store.list_samples(stage_id=stage.id):
        scores.setdefault(sample.checkpoint or "?", []).append(demo_task.judge_score(sample.prompt, sample.response))
    return {model: sum(values) / len(values) for model, values in scores.items()}


def rlhf_run(spec_text: str, workspace_dir: Path) -> tuple[int, float]:
    """Run a spec through `rlhf run` (a detached run process, a worker per
    stage); returns the run's id and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "bench-dpo.toml"
        spec_path.write_text(spec_text)
        env = {**os.environ, "RLHF_WORKSPACE": str(workspace_dir)}
        rlhf = Path(sys.executable).with_name("rlhf")
        started = time.perf_counter()
        result = subprocess.run([str(rlhf), "run", str(spec_path), "--json"], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"rlhf run failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    workspace = open_workspace(workspace_dir)
    run_id = max(r.id for r in workspace.store.list_runs())
    workspace.close()
    return run_id, seconds


def report(workspace: Workspace, run_id: int) -> None:
    store = workspace.store
    stages = {s.name: s for s in store.list_stages(run_id=run_id)}

    def points(stage: str, key: str) -> list[tuple[int, float]]:
        return [(int(p.step), p.value) for p in store.metric_series(stage_id=stages[stage].id, key=key)]

    for stage in stages.values():
        if stage.started_at and stage.finished_at:
            print(f"  {stage.name:<9} {(stage.finished_at - stage.started_at).total_seconds():6.0f} s")
    dpo = stages["dpo"]
    data = dpo.config["data"]
    print(f"pairs: {data['pairs']} from {data['prompts']} prompts, {data['same_text_pairs']} of them left out "
          f"(the same text twice); {data['train_pairs']} to train on, {data['eval_pairs']} held out")
    judged = points("dpo", "eval/judge_score")
    exact = points("dpo", "eval/judge_exact")
    margins = points("dpo", "eval/logp_margin")
    if "sft" in stages:
        sft_score = points("sft", "eval/judge_score")[-1][1]
        print(f"sft stage's own last judge score on the same prompts: {sft_score:.3f} (check)")
    print(f"judge score on {HELD_OUT_PROMPTS} held-out demo prompts (greedy):  "
          f"SFT {judged[0][1]:.3f} ({exact[0][1]:.0%} exact)   DPO {judged[-1][1]:.3f} ({exact[-1][1]:.0%} exact)   "
          f"change {judged[-1][1] - judged[0][1]:+.3f}")
    print("held-out log p(chosen) - log p(rejected), mean over pairs:  "
          + "   ".join(f"step {step}: {value:.2f}" for step, value in margins))
    accuracy = points("dpo", "eval/rewards/accuracies")
    print(f"held-out reward accuracy (DPO's implicit reward ranks the pair right): {accuracy[-1][1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--reuse", type=int, default=None, help="an earlier bench run in --workspace")
    parser.add_argument("--resample", action="store_true",
                        help="with --reuse: sample and rank anew (--prompts, --k, --temperature) from its SFT model")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=512, help="training prompts sampled for DPO pairs")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt, ranked by the demo judge")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--loss-type", default="sigmoid", choices=["sigmoid", "ipo"])
    parser.add_argument("--sft-weight", type=float, default=0.0, help="RPO: weight of the chosen responses' NLL")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--dpo-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sampled", type=int, default=4, metavar="N",
                        help="then sample N answers per held-out prompt from SFT and from DPO (0: skip)")
    options = parser.parse_args()
    if options.reuse is not None and options.workspace is None:
        parser.error("--reuse needs the --workspace of that run")
    if options.resample and options.reuse is None:
        parser.error("--resample needs --reuse")

    with tempfile.TemporaryDirectory() as tmp:
        workspace_dir = options.workspace or Path(tmp) / "ws"
        if options.reuse is None:
            spec = pipeline_spec(options)
        else:
            workspace = open_workspace(workspace_dir)
            spec = reuse_spec(workspace, options.reuse, options)
            workspace.close()
        run_id, seconds = rlhf_run(spec, workspace_dir)
        print(f"run {run_id} in {workspace_dir}: {seconds:.0f} s "
              f"(beta {options.beta}, {options.loss_type}, sft_weight {options.sft_weight}, "
              f"lr {options.learning_rate}, {options.dpo_steps} steps "
              f"of {options.batch_size} pairs)")
        workspace = open_workspace(workspace_dir)
        report(workspace, run_id)
        if options.sampled:
            spec = sampled_comparison_spec(workspace, run_id, options.sampled)
            workspace.close()
            compare_id, seconds = rlhf_run(spec, workspace_dir)
            workspace = open_workspace(workspace_dir)
            dpo = workspace.store.list_stages(run_id=run_id)[-1]
            means = sampled_scores(workspace, compare_id)
            sft_mean = next(v for k, v in means.items() if k != dpo.output_path)
            dpo_mean = means[dpo.output_path or ""]
            print(f"judge score of sampled answers (temperature 1, top_p 0.95, {options.sampled} per held-out prompt, "
                  f"run {compare_id}, {seconds:.0f} s):  SFT {sft_mean:.3f}   DPO {dpo_mean:.3f}   "
                  f"change {dpo_mean - sft_mean:+.3f}")
        workspace.close()


if __name__ == "__main__":
    main()
