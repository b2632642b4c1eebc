"""The library alone: what bench_scale.py compares each of our stages with.

    python bench/scale_library.py JOB.json RESULT.json

Runs one `Job` (scale_common.py) in this fresh process with the libraries
our stages are built on, set up as a person would write it by hand with the
same settings: transformers' Trainer for pretraining (the run_clm recipe:
texts concatenated and cut into blocks), trl's SFTTrainer, RewardTrainer,
DPOTrainer and GRPOTrainer, and for PPO (which trl 1.16 no longer has) a
plain loop of the same algorithm written here. Same model folder,
tokenizer, data, batch, sequence length, optimizer, schedule, LoRA config,
precision, activation checkpointing and thread count as the stage.

Writes RESULT.json: for every step, when it ended (unix seconds), the CPU
seconds so far and the process's peak memory so far, recorded where our
stage's are (the first log of the step: scale_probe.py's step_record), one
more such record (step SET_UP) once the models and trainer are built, before
the first step (the Trainer's on_train_begin; in the PPO loop once its
optimizer exists), plus the process's footprint before any model loads and,
for PPO, what its models and optimizer hold (the memory budget).
Nothing is saved: a save comes after the last step, outside what is timed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: split

import json
import random
import time
from collections.abc import Callable
from typing import Any

import datasets
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from bench.scale_common import Job
from bench.scale_probe import SET_UP, step_record


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


class StepRecorder(TrainerCallback):
    """The end time and peak memory of every step, at its first log (as scale_probe.py records ours)."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.records.append(step_record(SET_UP))  # models and trainer built, the first step next

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if "loss" in (logs or {}) and not any(r["step"] == state.global_step for r in self.records):
            self.records.append(step_record(state.global_step))


def common_args(job: Job) -> dict[str, Any]:
    """TrainingArguments keywords every trainer baseline shares: the stage's
    schedule and precision, quiet, no evaluation and no saving."""
    return {
        "output_dir": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"scale-library-{os.getpid()}"),
        "use_cpu": job.device == "cpu", "bf16": job.precision == "bf16",
        "max_steps": job.steps, "per_device_train_batch_size": job.batch_size,
        "learning_rate": job.learning_rate, "weight_decay": job.weight_decay,
        "warmup_steps": job.warmup_steps, "lr_scheduler_type": job.lr_scheduler, "max_grad_norm": 1.0,
        "seed": job.seed, "logging_steps": 1, "logging_first_step": True,
        "eval_strategy": "no", "save_strategy": "no", "report_to": "none", "disable_tqdm": True,
        "dataloader_num_workers": 0, "dataloader_pin_memory": job.device == "cuda",
        "logging_nan_inf_filter": False,  # as our stages: the filter costs a device sync per step on GPUs
    }


def lora_config(job: Job, task_type: str) -> LoraConfig | None:
    if not job.lora:
        return None
    return LoraConfig(r=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type=task_type)


def train(trainer: Trainer) -> list[dict[str, float]]:
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    recorder = StepRecorder()
    trainer.add_callback(recorder)
    trainer.train()
    return recorder.records


def causal_lm(job: Job) -> PreTrainedModel:
    # fp32 master weights, as our stages load them; bf16 comes from autocast.
    return AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32)


def chat(text: str, role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


# --- the trainer baselines ------------------------------------------------------------


def pretrain(job: Job, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, float]]:
    """transformers' Trainer on fixed-length blocks of the concatenated texts."""
    ids: list[int] = []
    for row in read_jsonl(job.data):
        ids.extend(tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    blocks = [ids[i:i + job.seq_len] for i in range(0, len(ids) - job.seq_len + 1, job.seq_len)]
    trainer = Trainer(
        model=causal_lm(job),
        args=TrainingArguments(**common_args(job)),
        train_dataset=datasets.Dataset.from_dict({"input_ids": blocks}),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    return train(trainer)


def sft(job: Job, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, float]]:
    """trl's SFTTrainer on prompt/completion conversations, loss on the completions."""
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": chat(r["prompt"], "user"), "completion": chat(r["completion"], "assistant")}
            for r in read_jsonl(job.data)]
    args = SFTConfig(**common_args(job), max_length=job.seq_len, completion_only_loss=True,
                     activation_checkpointing=job.activation_checkpointing,
                     pad_to_multiple_of=8 if job.device == "cuda" else None)
    trainer = SFTTrainer(model=causal_lm(job), args=args, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora_config(job, "CAUSAL_LM"))
    return train(trainer)


def preference_rows(job: Job) -> datasets.Dataset:
    return datasets.Dataset.from_list([
        {"prompt": chat(r["prompt"], "user"), "chosen": chat(r["chosen"], "assistant"),
         "rejected": chat(r["rejected"], "assistant")} for r in read_jsonl(job.data)])


def reward(job: Job, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, float]]:
    """trl's RewardTrainer: the causal LM's body with a one-output score head."""
    from trl import RewardConfig, RewardTrainer

    model = AutoModelForSequenceClassification.from_pretrained(job.model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(**common_args(job), max_length=job.seq_len,
                        activation_checkpointing=job.activation_checkpointing,
                        pad_to_multiple_of=8 if job.device == "cuda" else None)
    trainer = RewardTrainer(model=model, args=args, train_dataset=preference_rows(job),
                            processing_class=tokenizer, peft_config=lora_config(job, "SEQ_CLS"))
    return train(trainer)


def dpo(job: Job, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, float]]:
    """trl's DPOTrainer; with LoRA the reference is the policy with its adapters off."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common_args(job), beta=0.1, loss_type=["sigmoid"], max_length=job.seq_len,
                     precompute_ref_log_probs=False, activation_checkpointing=job.activation_checkpointing,
                     pad_to_multiple_of=8 if job.device == "cuda" else None)
    trainer = DPOTrainer(model=causal_lm(job), ref_model=None, args=args, train_dataset=preference_rows(job),
                         processing_class=tokenizer, peft_config=lora_config(job, "CAUSAL_LM"))
    return train(trainer)


def reward_model(job: Job) -> PreTrainedModel:
    """The frozen reward model, in the compute precision (as our stages hold it)."""
    dtype = torch.bfloat16 if job.precision == "bf16" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(job.reward_dir, dtype=dtype)
    return model.requires_grad_(False).eval()


def grpo(job: Job, tokenizer: PreTrainedTokenizerBase) -> list[dict[str, float]]:
    """trl's GRPOTrainer with the reward model as its reward function."""
    from trl import GRPOConfig, GRPOTrainer

    prompts = [{"prompt": chat(r["prompt"], "user")} for r in read_jsonl(job.data)]
    args = GRPOConfig(
        **{**common_args(job), "per_device_train_batch_size": job.prompts_per_step * job.generations},
        num_generations=job.generations, max_completion_length=job.new_tokens, temperature=1.0, top_p=1.0,
        top_k=0, beta=job.beta, epsilon=0.2, disable_dropout=True, log_completions=False,
        activation_checkpointing=job.activation_checkpointing, loss_type="dapo", scale_rewards="group",
    )
    trainer = GRPOTrainer(model=causal_lm(job), reward_funcs=[reward_model(job)], args=args,
                          train_dataset=datasets.Dataset.from_list(prompts), processing_class=tokenizer,
                          reward_processing_classes=[tokenizer], peft_config=lora_config(job, "CAUSAL_LM"))
    return train(trainer)


# --- PPO: a plain loop --------------------------------------------------------------


def ppo(job: Job, tokenizer: PreTrainedTokenizerBase, result: dict[str, Any]) -> list[dict[str, float]]:
    """InstructGPT's PPO written out plainly, with our stage's settings: a
    LoRA policy whose reference is itself with the adapters off, a value
    network started from the reward model and trained in full, the frozen
    reward model. Each update: sample one response per prompt, score
    (policy, reference, value, reward model; the no-eos penalty), per-token
    rewards = score at the end - beta x KL, GAE, whitened advantages, then
    ppo_epochs passes of clipped policy + value steps over minibatches."""
    device = torch.device(job.device)
    autocast = torch.autocast(job.device, dtype=torch.bfloat16, enabled=job.precision == "bf16")
    adapters = lora_config(job, "CAUSAL_LM")
    assert adapters is not None, "PPO is one of LORA_STAGES"  # the reference is the policy without them
    policy = get_peft_model(causal_lm(job), adapters).to(device).eval()
    value = AutoModelForSequenceClassification.from_pretrained(job.reward_dir, dtype=torch.float32).to(device).eval()
    scorer = reward_model(job).to(device)
    policy_params = [p for p in policy.parameters() if p.requires_grad]
    value_params = list(value.parameters())
    optimizer = torch.optim.AdamW([{"params": policy_params}, {"params": value_params}],
                                  lr=job.learning_rate, weight_decay=0.0)
    result["budget"] = memory_budget([policy, value, scorer], policy_params + value_params)
    records = [step_record(SET_UP)]

    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(chat(r["prompt"], "user"), tokenize=False, add_generation_prompt=True)
               for r in read_jsonl(job.data)]
    order = list(range(len(prompts)))
    random.Random(job.seed).shuffle(order)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    gamma, lam, clip, clip_value, vf_coef, penalty = 1.0, 0.95, 0.2, 0.2, 0.1, 1.0

    def forward(inputs: dict[str, torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropy of the response tokens, and values (the state before each)."""
        logits = policy(**inputs, use_cache=False, logits_to_keep=length + 1).logits[:, :length].float()
        body = value.base_model(**inputs, use_cache=False).last_hidden_state
        values = value.score(body).squeeze(-1).float()[:, -length - 1:-1]
        return logits, values

    for update in range(1, job.steps + 1):
        # -- rollout
        batch = [prompts[order[(update * job.rollout_batch + i) % len(prompts)]] for i in range(job.rollout_batch)]
        encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad(), autocast:
            sequences = policy.generate(**encoded, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                        max_new_tokens=job.new_tokens, pad_token_id=pad, eos_token_id=eos)
        responses = sequences[:, encoded["input_ids"].shape[1]:]
        length = responses.shape[1]
        is_eos = responses == eos
        ended = is_eos.any(dim=1)
        lengths = torch.where(ended, is_eos.int().argmax(dim=1) + 1, length)
        mask = (torch.arange(length, device=device)[None, :] < lengths[:, None]).float()
        responses = responses.masked_fill(mask == 0, pad)
        attention = torch.cat([encoded["attention_mask"], mask.long()], dim=1)
        inputs = {"input_ids": torch.cat([encoded["input_ids"], responses], dim=1), "attention_mask": attention,
                  "position_ids": (attention.cumsum(dim=1) - 1).clamp(min=0)}

        # -- score, in minibatch-sized chunks
        old_logprobs, ref_logprobs, old_values, scores = [], [], [], []
        with torch.no_grad(), autocast:
            for start in range(0, job.rollout_batch, job.minibatch):
                part = {k: v[start:start + job.minibatch] for k, v in inputs.items()}
                tokens = responses[start:start + job.minibatch, :, None]
                logits, values = forward(part, length)
                old_logprobs.append(torch.log_softmax(logits, -1).gather(-1, tokens).squeeze(-1))
                entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)  # logged by PPO codes
                del logits, entropy
                with policy.disable_adapter():
                    ref = policy(**part, use_cache=False, logits_to_keep=length + 1).logits[:, :length].float()
                ref_logprobs.append(torch.log_softmax(ref, -1).gather(-1, tokens).squeeze(-1))
                old_values.append(values)
                # The reward model reads the last token that is not padding: the response's end.
                scores.append(scorer(input_ids=part["input_ids"], attention_mask=part["attention_mask"]
                                     ).logits[:, 0].float())
        logprobs_old, logprobs_ref = torch.cat(old_logprobs) * mask, torch.cat(ref_logprobs) * mask
        values_old = torch.cat(old_values) * mask
        score = torch.cat(scores) - penalty * (~ended).float()

        # -- advantages
        kl = (logprobs_old - logprobs_ref) * mask
        rewards = -job.beta * kl
        rewards[torch.arange(job.rollout_batch, device=device), lengths - 1] += score
        advantages = torch.zeros_like(rewards)
        next_value = next_advantage = torch.zeros(job.rollout_batch, device=device)
        for t in reversed(range(length)):  # GAE; nothing is earned after a response's end
            delta = rewards[:, t] + gamma * next_value - values_old[:, t]
            next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
            advantages[:, t] = next_advantage
            next_value = values_old[:, t]
        returns = advantages + values_old
        mean = (advantages * mask).sum() / mask.sum()
        var = (((advantages - mean) ** 2) * mask).sum() / mask.sum()
        advantages = (advantages - mean) * torch.rsqrt(var + 1e-8) * mask

        # -- optimise
        generator = torch.Generator().manual_seed(job.seed + update)
        for _epoch in range(job.ppo_epochs):
            permutation = torch.randperm(job.rollout_batch, generator=generator).to(device)
            for start in range(0, job.rollout_batch, job.minibatch):
                rows = permutation[start:start + job.minibatch]
                part = {k: v[rows] for k, v in inputs.items()}
                m = mask[rows]
                with autocast:
                    logits, values = forward(part, length)
                logprobs = torch.log_softmax(logits, -1).gather(-1, responses[rows, :, None]).squeeze(-1)
                del logits
                ratio = torch.exp(logprobs - logprobs_old[rows])
                policy_loss = torch.max(-advantages[rows] * ratio,
                                        -advantages[rows] * ratio.clamp(1 - clip, 1 + clip))
                policy_loss = (policy_loss * m).sum() / m.sum()
                clipped = values_old[rows] + (values - values_old[rows]).clamp(-clip_value, clip_value)
                value_loss = 0.5 * torch.max((values - returns[rows]) ** 2, (clipped - returns[rows]) ** 2)
                value_loss = (value_loss * m).sum() / m.sum()
                (policy_loss + vf_coef * value_loss).backward()
                torch.nn.utils.clip_grad_norm_(policy_params, 1.0)
                torch.nn.utils.clip_grad_norm_(value_params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                policy_loss.item()  # our stage reads every loss for its metrics; so does this loop
        kl.sum(1).mean().item()
        records.append(step_record(update))
    return records


def memory_budget(models: list[torch.nn.Module], trainable: list[torch.nn.Parameter]) -> dict[str, float]:
    """MiB held by the models' weights (tied weights once), the trainable
    parameters' gradients, and AdamW's two moments per trainable parameter."""
    weights = {id(p): p for model in models for p in model.parameters()}
    mib = 2**20
    return {
        "weights_mb": sum(p.numel() * p.element_size() for p in weights.values()) / mib,
        "gradients_mb": sum(p.numel() * p.element_size() for p in trainable) / mib,
        "optimizer_mb": sum(2 * p.numel() * 4 for p in trainable) / mib,
        "trainable_parameters": float(sum(p.numel() for p in trainable)),
    }


RUNNERS: dict[str, Callable[..., list[dict[str, float]]]] = {
    "pretrain": pretrain, "sft": sft, "sft-lora": sft, "reward": reward, "dpo": dpo, "grpo": grpo,
}


def main() -> None:
    job = Job.from_json(Path(sys.argv[1]).read_text())
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.set_seed(job.seed)
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    before = step_record(0)
    result: dict[str, Any] = {"threads": torch.get_num_threads(),
                              # what the process holds before any model: the interpreter and libraries
                              # (the peak resident set, and the part of it allocated rather than mapped)
                              "footprint_mb": before["rss_peak_mb"], "footprint_anon_mb": before["rss_anon_mb"]}
    started = time.time()
    if job.stage == "ppo":
        result["steps"] = ppo(job, tokenizer, result)
    else:
        result["steps"] = RUNNERS[job.stage](job, tokenizer)
    result["seconds"] = time.time() - started
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
