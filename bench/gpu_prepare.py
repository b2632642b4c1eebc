"""Everything the GPU check trains on, written into one folder: data, a tokenizer, models, pipeline specs.

Nothing is downloaded (the GPU machine has no network): the text is the
standard library's docstrings, the instructions and prompts are the demo
task's, the tokenizer is a byte-level BPE trained here (engine's `train_bpe`,
with its chat template), and the models are random inits built from configs:

- `qwen-0.5b/`: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 kv
  heads, intermediate 4864, vocab 151936, tied embeddings, QKV bias: 494 M
  parameters); `qwen-0.5b-reward/`, the same as a one-output sequence
  classifier. The vocabulary stays 151936 although the tokenizer has 8192
  tokens: the output layer and the sampling over it are a quarter of a
  decoding step's work, so a smaller vocabulary would flatter generation. The
  ids above the tokenizer's decode to nothing, so the reward model (which reads
  responses as text) sees shorter responses than the policy and value network.
- `gpt2-124m/`: GPT-2 small (12 layers, 768 hidden, 12 heads, vocab 50257,
  1024 positions: 124 M parameters) for pretraining.

`--size toy` makes every model a few hundred thousand parameters, for the CPU
smoke run of bench/gpu_check.sh.

The specs (`rlhf run` them): pretrain.toml, sft_qlora.toml, ppo.toml, and with
`--size toy` demo.toml (the quick demo with every stage cut to a few steps; on
the GPU the check runs `rlhf demo --headless --quick` itself). Each names its run
after its file, so bench/gpu_report.py finds it.

    python bench/gpu_prepare.py --out DIR [--size full|toy] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.stages.common import setup as runtime  # noqa: F401  (imported first: it quiets tqdm's bars)

# isort: split

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

from engine.demo import task as demo_task
from engine.demo.pipeline import demo_document
from engine.spec.toml_render import render_toml
from engine.stages.common.stdlib_corpus import stdlib_docstrings
from engine.stages.common.tokenizer import train_bpe

#: Qwen/Qwen2.5-0.5B's config.json (hidden 896, 24 layers, 14/2 heads, intermediate 4864, vocab 151936, tied)
QWEN_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
            "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6}
QWEN_TOY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "vocab_size": 1536, "max_position_embeddings": 512}
#: GPT-2 small
GPT2_124M = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
GPT2_TOY = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 1536, "n_positions": 256}

#: tokenizer size and how much stdlib text it and the pretraining corpus take
TOKENIZER = {"full": 8192, "toy": 1024}
CORPUS_CHARS = {"full": 3_000_000, "toy": 200_000}

#: the stages' settings per size. Full: sized so that each stage takes well under a minute of an
#: H200 after its ~20 s of start-up (bench/gpu_check.sh gives each a timeout and the whole 8 minutes).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        # 60 steps of 32 x 1024 tokens; tokens/s logged every 10 steps (one sync per window).
        "pretrain": {"block_size": 1024, "batch_size": 32, "max_steps": 60, "learning_rate": 6e-4,
                     "warmup_steps": 10, "eval_every": 60, "eval_batches": 2, "save_every": 60, "log_every": 10},
        # QLoRA: the base in 4 bits (bitsandbytes nf4), LoRA r 16 on every linear layer.
        "sft": {"max_steps": 30, "batch_size": 16, "max_length": 256, "learning_rate": 2e-4, "warmup_steps": 3,
                "eval_every": 30, "eval_batches": 2, "save_every": 30, "log_every": 5, "eval_prompt_count": 0,
                "quantization": "4bit"},
        # PPO's defaults per update (32 prompts, minibatches of 8, 4 epochs), 128-token responses.
        "ppo": {"updates": 6, "rollout_batch_size": 32, "minibatch_size": 8, "ppo_epochs": 4,
                "max_new_tokens": 128, "learning_rate": 1e-5, "save_every": 6, "sample_every": 6,
                "eval_prompt_count": 0},
    },
    "toy": {
        "pretrain": {"block_size": 64, "batch_size": 4, "max_steps": 6, "learning_rate": 1e-3,
                     "warmup_steps": 1, "eval_every": 6, "eval_batches": 1, "save_every": 6, "log_every": 2},
        # No quantization: bitsandbytes 4-bit needs CUDA (the stage refuses it on a CPU).
        "sft": {"max_steps": 4, "batch_size": 4, "max_length": 64, "learning_rate": 2e-4, "warmup_steps": 1,
                "eval_every": 4, "eval_batches": 1, "save_every": 4, "log_every": 2, "eval_prompt_count": 0},
        "ppo": {"updates": 3, "rollout_batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1,
                "max_new_tokens": 8, "learning_rate": 1e-5, "save_every": 3, "sample_every": 3,
                "eval_prompt_count": 0},
    },
}
LORA = {"r": 16, "alpha": 32}

#: the toy demo: the quick demo's stages with their step counts cut to a few
TOY_DEMO: dict[str, dict[str, Any]] = {
    "pretrain": {"max_steps": 4, "eval_every": 4, "save_every": 4, "warmup_steps": 1},
    "sft": {"max_steps": 4, "eval_every": 4, "sample_every": 4, "eval_prompt_count": 2, "batch_size": 8},
    "sample": {"max_prompts": 6, "responses_per_prompt": 2, "max_new_tokens": 8},
    "reward": {"max_steps": 3, "eval_every": 3, "batch_size": 4},
    "ppo": {"updates": 2, "rollout_batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8,
            "sample_every": 2, "eval_prompt_count": 2},
    "dpo": {"max_steps": 3, "eval_every": 3, "sample_every": 3, "eval_prompt_count": 2, "batch_size": 4},
    "arena_answers": {"max_prompts": 4, "max_new_tokens": 8},
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_data(out: Path, size: str) -> tuple[list[str], dict[str, Path]]:
    """The pretraining corpus (docstrings), instructions (SFT) and prompts (PPO), as JSONL files."""
    texts = stdlib_docstrings(max_chars=CORPUS_CHARS[size])
    instructions = demo_task.demo_instructions(2000 if size == "full" else 200)
    files = {
        "corpus": write_jsonl(out / "corpus.jsonl", [{"text": t} for t in texts]),
        "instructions": write_jsonl(out / "instructions.jsonl",
                                    [{"prompt": r["prompt"], "completion": r["completion"]} for r in instructions]),
        "prompts": write_jsonl(out / "prompts.jsonl", [{"prompt": r["prompt"]} for r in instructions[:640]]),
    }
    return texts, files


def qwen_config(size: str, tokenizer: PreTrainedTokenizerBase, **extra: Any) -> Qwen2Config:
    shape = QWEN_05B if size == "full" else QWEN_TOY
    return Qwen2Config(**shape, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra)


def save_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> int:
    """Saved in bf16 (half the bytes to write and read; the stages load what they need), with the tokenizer."""
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return parameters


def write_models(out: Path, size: str, tokenizer: PreTrainedTokenizerBase, device: str) -> dict[str, Path]:
    """Random inits, built on `device` (a 0.5B init takes seconds on a GPU, longer on a CPU)."""
    folders = {"qwen": out / "qwen-0.5b", "reward": out / "qwen-0.5b-reward", "gpt2": out / "gpt2-124m"}
    torch.manual_seed(0)
    with torch.device(device):
        count = save_model(Qwen2ForCausalLM(qwen_config(size, tokenizer)), tokenizer, folders["qwen"])
        print(f"  {folders['qwen'].name}: {count / 1e6:.1f} M parameters", flush=True)
        reward = Qwen2ForSequenceClassification(qwen_config(size, tokenizer, num_labels=1))
        count = save_model(reward, tokenizer, folders["reward"])
        print(f"  {folders['reward'].name}: {count / 1e6:.1f} M parameters", flush=True)
        shape = GPT2_124M if size == "full" else GPT2_TOY
        gpt2 = GPT2LMHeadModel(GPT2Config(**shape, bos_token_id=tokenizer.bos_token_id,
                                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
        count = save_model(gpt2, tokenizer, folders["gpt2"])
        print(f"  {folders['gpt2'].name}: {count / 1e6:.1f} M parameters", flush=True)
    return folders


def write_specs(out: Path, size: str, models: dict[str, Path], files: dict[str, Path], *,
                settings_size: str | None = None) -> list[Path]:
    """The specs; `settings_size` takes another size's settings (the full ones, to validate on toy models)."""
    settings = SETTINGS[settings_size or size]
    stages: dict[str, dict[str, Any]] = {
        "pretrain": {"kind": "pretrain", "from": str(models["gpt2"]), "data": str(files["corpus"]),
                     **settings["pretrain"]},
        "sft_qlora": {"kind": "sft", "from": str(models["qwen"]), "data": str(files["instructions"]),
                      **settings["sft"], "lora": LORA},
        "ppo": {"kind": "ppo", "from": str(models["qwen"]), "reward_model": str(models["reward"]),
                "prompts": str(files["prompts"]), **settings["ppo"], "lora": LORA},
    }
    specs = []
    for name, stage in stages.items():
        path = out / f"{name}.toml"
        path.write_text(render_toml({"name": name, "stages": {stage["kind"]: stage}}))
        specs.append(path)
    if size == "toy":
        document = demo_document(quick=True)
        document["name"] = "demo"
        for stage, values in TOY_DEMO.items():
            document["stages"][stage].update(values)
        path = out / "demo.toml"
        path.write_text(render_toml(document))
        specs.append(path)
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into (created)")
    parser.add_argument("--size", choices=["full", "toy"], default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the random inits are drawn (default: cuda if there is one)")
    options = parser.parse_args()

    started = time.perf_counter()
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    texts, files = write_data(out, options.size)
    tokenizer = train_bpe(texts, TOKENIZER[options.size])
    print(f"data: {len(texts)} documents; tokenizer: byte-level BPE, {len(tokenizer)} tokens "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    models = write_models(out, options.size, tokenizer, options.device)
    specs = write_specs(out, options.size, models, files)
    if options.size == "toy":
        # The full-size settings are checked too (field ranges, minibatch <= rollout, QLoRA needs LoRA)
        # by validating them here, on the toy models: a GPU session should not find a typo.
        from engine import load_spec

        full = out / "full-specs"
        full.mkdir(exist_ok=True)
        for path in write_specs(full, "full", models, files, settings_size="full"):
            load_spec(path)
        print("full-size specs: valid", flush=True)
    print(f"specs: {', '.join(p.name for p in specs)}; prepared in {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
