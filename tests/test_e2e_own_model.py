"""A user's own model and data, end to end through `rlhf run`: nothing of the demo leaks in.

The user of this tool brings a model folder with its own tokenizer and
their own data. Here: a small Qwen2-architecture model with a ChatML
tokenizer trained locally, ShareGPT chats for SFT, a prompts file, an
Anthropic-HH preference file, and their own judge (`module:function`).
The pipeline is SFT (LoRA), sample, rank (their judge), reward (LoRA, on the
ranking and the HH file), PPO (LoRA) and DPO (LoRA), with no eval prompts
and no eval judge named: every stage must evaluate on prompts held out of
the user's data, and no demo prompt or demo judge may appear in the
metrics, the samples, the judgements or the report.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from engine.demo import task as demo_task
from store import open_workspace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RLHF = str(Path(sys.executable).with_name("rlhf"))

#: Qwen2's chat format (ChatML), its end-of-turn as eos, as Qwen2.5's own tokenizer has it
CHATML = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
FRUITS = ["apple", "pear", "plum", "fig", "lime", "kiwi", "mango", "peach", "grape", "melon", "cherry", "lemon"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "pink", "brown"]


def questions() -> list[tuple[str, str]]:
    """The user's task: what colour is a fruit, with the answer they want."""
    draw = random.Random(3)
    pairs = []
    for fruit in FRUITS:
        for template in ("What colour is a {}?", "Tell me the colour of a {}.", "Which colour has a ripe {}?",
                         "Describe the colour of one {}."):
            pairs.append((template.format(fruit), f"A {fruit} is {draw.choice(COLOURS)}."))
    return pairs


def chatml_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    model.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                        extra_special_tokens=["<|im_start|>"], model_max_length=512)
    tokenizer.chat_template = CHATML
    return tokenizer


def write_user_files(root: Path) -> dict[str, Path]:
    pairs = questions()
    texts = [f"{q} {a}" for q, a in pairs] * 4 + COLOURS + FRUITS
    tokenizer = chatml_tokenizer(texts)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model_dir = root / "my-qwen2"
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    chats = root / "chats.jsonl"  # ShareGPT
    chats.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
                             + "\n" for q, a in pairs))
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q, _ in pairs[::2]))
    hh = root / "hh.jsonl"  # Anthropic HH: whole dialogues, chosen and rejected
    hh.write_text("".join(json.dumps({"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}",
                                      "rejected": f"\n\nHuman: {q}\n\nAssistant: I do not know."}) + "\n"
                          for q, a in pairs[1::2]))
    judge = root / "my_judge.py"  # the user's judge: answers that name a colour, shorter first
    judge.write_text(
        f"COLOURS = {COLOURS!r}\n\n"
        "def judge(prompt, responses):\n"
        "    return [float(any(c in r for c in COLOURS)) - len(r) / 1000 for r in responses]\n"
    )
    return {"model": model_dir, "chats": chats, "prompts": prompts, "hh": hh}


SPEC = """
name = "own-model"

[stages.sft]
kind = "sft"
from = "./my-qwen2"
data = "./chats.jsonl"
max_steps = 30
batch_size = 8
learning_rate = 5e-3
warmup_steps = 2
eval_every = 15
save_every = 100
sample_every = 15
sample_max_new_tokens = 12
[stages.sft.lora]
r = 8
alpha = 16

[stages.sample]
kind = "sample"
from = "sft"
prompts = "./prompts.jsonl"
max_prompts = 12
responses_per_prompt = 3
max_new_tokens = 12

[stages.rank]
kind = "rank"
from = "sample"
judge = "my_judge:judge"

[stages.reward]
kind = "reward"
from = "sft"
preferences = ["rank", "./hh.jsonl"]
max_steps = 6
batch_size = 8
learning_rate = 1e-3
eval_every = 3
eval_fraction = 0.25
[stages.reward.lora]
r = 8
alpha = 16

[stages.ppo]
kind = "ppo"
from = "sft"
reward_model = "reward"
prompts = "./prompts.jsonl"
updates = 2
rollout_batch_size = 4
minibatch_size = 2
ppo_epochs = 1
max_new_tokens = 8
sample_every = 1
sample_max_new_tokens = 8
[stages.ppo.lora]
r = 8
alpha = 16

[stages.dpo]
kind = "dpo"
from = "sft"
preferences = "rank"
max_steps = 4
batch_size = 4
learning_rate = 1e-3
eval_every = 2
sample_every = 2
sample_max_new_tokens = 8
eval_fraction = 0.25
[stages.dpo.lora]
r = 8
alpha = 16
"""


def test_a_users_qwen2_model_and_data_run_every_stage_without_the_demo(tmp_path: Path) -> None:
    write_user_files(tmp_path)
    (tmp_path / "pipeline.toml").write_text(SPEC)
    env = {**os.environ, "RLHF_DEVICES": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    workspace = tmp_path / "ws"
    try:
        result = subprocess.run([RLHF, "-w", str(workspace), "run", str(tmp_path / "pipeline.toml"), "--json"],
                                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=840)
    finally:  # the run is detached: never leave it training after the test
        subprocess.run([RLHF, "-w", str(workspace), "cancel", "1"], env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(subprocess.run([RLHF, "-w", str(workspace), "report", "1", "--json"], env=env,
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [s["status"] for s in report["stages"]] == ["succeeded"] * 6

    user_prompts = {q for q, _ in questions()}
    demo_prompts = {t.prompt for t in demo_task.generate_tasks(200, seed=0)}
    ws = open_workspace(workspace)
    try:
        store = ws.store
        stages = {s.name: s for s in store.list_stages(run_id=1)}
        # Every prompt any stage asked is the user's: eval answers, samples, rollouts.
        samples = [s for stage in stages.values() for s in store.list_samples(stage_id=stage.id)]
        asked = {s.prompt for s in samples}
        assert asked and asked <= user_prompts, asked - user_prompts
        assert not asked & demo_prompts
        # SFT, PPO and DPO answered prompts held out of their own data, before training and after.
        for name in ("sft", "ppo", "dpo"):
            answers = [s for s in store.list_samples(stage_id=stages[name].id) if s.meta.get("kind") != "rollout"]
            assert {s.step for s in answers} >= {0}, name
            assert len({s.step for s in answers}) >= 2, name
        # No judge score: no stage named an eval judge. Held-out figures instead.
        keys = {m.key for m in store.metric_summaries(run_id=1)}
        assert not keys & {"eval/judge_score", "eval/judge_exact"}, keys
        assert not [k for k in keys if "demo" in k], keys
        assert {"eval/loss", "eval/accuracy", "eval/rm_score", "ppo/kl", "eval/logp_margin"} <= keys
        # The ranking is the user's judge's, never the demo's.
        annotators = {j.annotator for j in store.feedback.judgements()}
        assert annotators == {"judge:my_judge:judge"}, annotators
    finally:
        ws.close()

    shown = {(s["stage"], f["key"]) for s in report["stages"] for f in s["figures"]}
    assert ("sft", "eval/loss") in shown and ("reward", "eval/accuracy") in shown
    assert ("ppo", "eval/rm_score") in shown and ("ppo", "ppo/kl") in shown and ("dpo", "eval/logp_margin") in shown
    assert not [k for _, k in shown if k.startswith("eval/judge")]
    # What the stages saved is the user's Qwen2 with its ChatML tokenizer, not a built-in.
    for name in ("sft", "ppo", "dpo"):
        final = Path(stages_output(report, workspace, name))
        assert json.loads((final / "config.json").read_text())["model_type"] == "qwen2", name
        assert json.loads((final / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>", name


def stages_output(report: dict, workspace: Path, name: str) -> str:
    ws = open_workspace(workspace)
    try:
        [stage] = [s for s in ws.store.list_stages(run_id=report["run_id"]) if s.name == name]
        assert stage.output_path
        return stage.output_path
    finally:
        ws.close()
