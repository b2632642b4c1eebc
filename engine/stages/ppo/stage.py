"""PPO: the policy learns to please a reward model, on a KL leash to where it started.

InstructGPT's third step, written out on torch, transformers, peft and
accelerate (trl 1.16 has no PPO trainer). `run(ctx)` reads top to bottom:
load the models (policy, frozen reference, reward model, value network),
read the prompts, then for each update

    rollout   sample one response per prompt with the KV cache
    score     the reward model's score of each whole response, and per token:
              the policy's and the reference's log-probabilities and the values
    advantage reward = score - beta * KL on every token, GAE, whitening
    optimise  ppo_epochs passes of minibatches: clipped policy loss + clipped
              value loss (+ the PPO-ptx language-modelling loss), clipped gradients
    report    metrics, rollout samples with their reward and KL, eval answers
    maybe save a checkpoint; stop here if a cancel arrived

The arithmetic lives in ppo_math.py, one small function per idea.

The models:
- policy: the `from` model (every weight, or LoRA adapters on it);
- reference: the same model frozen, for the KL leash; with LoRA it is the
  policy with its adapters switched off, so no second copy is kept;
- reward model: a sequence-classification model with one output (a reward
  stage's final/). It may have its own tokenizer: responses are decoded to
  text and framed in its chat template as the reward stage framed its pairs
  (a user turn, then the assistant's), so it never sees the policy's ids;
- value network: a separate sequence-classification model read at every
  token, started from the reward model (InstructGPT; it must then share the
  policy's tokenizer, since its values sit on the policy's tokens) or from
  the policy with a new, zeroed head.

Dropout is off everywhere (every model stays in eval mode): PPO compares the
policy's probabilities before and after a step, and dropout would make that
ratio differ from 1 for no reason.

Exact resume: every random draw of an update (its prompts, its samples, its
minibatch order) is seeded by the spec's seed and the update's number, and a
checkpoint holds the policy (or its adapters), the value network, the
optimizer, beta and the update counter (and each process's RNG states, for
anything else). A resumed run replays the updates an uninterrupted one would
have made.

Several processes (`processes = N`, through `accelerate launch`): each
samples and scores its own share of prompts; gradients are averaged by DDP;
whitening uses the statistics of the global batch; metrics are averaged over
processes; only the main process writes to the store and saves.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import copy
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from engine.errors import StageCancelled, StageFailed
from engine.runtime.checkpoints import CHECKPOINT_DONE_MARKER
from engine.spec.pass_through import split_ppo_settings
from engine.stages.common import quantized
from engine.stages.common.checkpoint_writing import CheckpointWriter, record_and_prune, start_writing
from engine.stages.common.context import Source, StageContext
from engine.stages.common.data_loading import instruction_examples, load_records
from engine.stages.common.distributed import full_weights_for_generation
from engine.stages.common.eval_answers import EvalAnswers
from engine.stages.common.generation import SamplingSettings, generate_tokens
from engine.stages.common.inference import dtype_for, max_positions
from engine.stages.common.models import (
    count_parameters,
    enable_activation_checkpointing,
    load_classifier,
    load_model_for_training,
    without_dropout,
)
from engine.stages.common.practice_prompts import practice_prompts
from engine.stages.common.prologue import begin
from engine.stages.common.saving import parent_weights, record_source, save_final, stage_provenance
from engine.stages.common.tokenizer import CHAT_TEMPLATE, describe_tokenizer, load_stage_tokenizer, load_tokenizer
from engine.stages.ppo import ppo_math
from engine.stages.ppo.spec import PPOSpec

#: what a checkpoint folder holds besides the policy (a plain HF folder, or an adapter)
VALUE_FOLDER = "value"
STATE_FILE = "ppo_state.pt"


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, PPOSpec)
    quantized.require(spec, hardware)
    # The [trainer] table's settings for our own loop: AdamW's and the Accelerator's (validated by the spec).
    optimizer_settings, accelerator_settings = split_ppo_settings(spec.trainer)
    accelerator = Accelerator(
        cpu=hardware.device == "cpu",
        mixed_precision="bf16" if hardware.bf16 else "fp16" if hardware.fp16 else "no",
        **accelerator_settings,
    )
    resume = _resume_folder(ctx)
    # Checkpoints are staged and renamed into place whole; a kill's leftovers go first.
    writer = CheckpointWriter(ctx.checkpoints_dir, keep=spec.keep_checkpoints, is_main=accelerator.is_main_process,
                              barrier=accelerator.wait_for_everyone)
    start_writing(ctx, writer)

    # -- models ----------------------------------------------------------------
    models = load_models(ctx, spec, accelerator.device, resume, hardware=hardware)
    policy, value = models.policy, models.value
    tokenizer = models.tokenizer

    # -- prompts ---------------------------------------------------------------
    rows, held_out = practice_prompts(ctx, spec, tokenizer, models.policy_source)
    evaluator = EvalAnswers.for_stage(ctx, tokenizer, held_out=held_out, prompt_field=spec.prompt_field)
    ptx_texts = read_ptx_texts(ctx, spec, tokenizer) if spec.ptx_coef > 0 else []

    # -- optimizer -------------------------------------------------------------
    value_lr = spec.value_learning_rate or spec.learning_rate
    optimizer = build_optimizer(policy, value, spec, optimizer_settings)
    policy, value, optimizer = accelerator.prepare(policy, value, optimizer)
    kl_controller = (
        ppo_math.AdaptiveKLController(spec.beta, target=spec.target_kl, horizon=spec.horizon)
        if spec.adaptive_kl else ppo_math.FixedKLController(spec.beta)
    )
    done = 0
    if resume is not None:
        done = load_training_state(resume, accelerator, optimizer, kl_controller)
        ctx.log(f"resuming after update {done} of {spec.updates} (beta {kl_controller.beta:.4g})")

    ctx.set_resolved_config(
        _resolved_config(spec, models, accelerator, rows, evaluator, ptx_texts, value_lr),
        device=hardware.describe(),
    )
    ctx.set_progress(done, spec.updates)
    if accelerator.num_processes == 1 and ctx.should_stop():
        raise StageCancelled("cancelled before the first update")
    if done == 0:
        # Under sharding every process gathers the weights; the main one answers.
        with full_weights_for_generation(policy):
            answer_eval_prompts(evaluator, accelerator, models, 0, models.parent_name)

    # -- the updates -------------------------------------------------------------
    settings = SamplingSettings(temperature=spec.temperature, top_p=spec.top_p, max_new_tokens=spec.max_new_tokens)
    prompt_order = PromptOrder(len(rows), spec.seed)
    for update in range(done + 1, spec.updates + 1):
        timings: dict[str, float] = {}

        # Rollout: this process's prompts for this update, one response each.
        with Timer(timings, "time/generation", hardware.device):
            indices = prompt_order.take(update, accelerator.process_index, spec.rollout_batch_size,
                                        accelerator.num_processes)
            prompts = [rows[i]["text"] for i in indices]
            seed = rollout_seed(spec.seed, update, accelerator.process_index)
            with full_weights_for_generation(policy), accelerator.autocast():
                batch = rollout(models.policy, tokenizer, prompts, replace(settings, seed=seed))

        # Scoring: what every model says about the responses, then the
        # per-token rewards and the advantages.
        with Timer(timings, "time/scoring", hardware.device):
            with accelerator.autocast():
                scored = score(accelerator, models, policy, value, batch, spec)
            beta = kl_controller.beta
            advantages, returns, rewards = advantages_and_returns(accelerator, scored, batch, spec, beta)

        # Training: ppo_epochs passes over minibatches of this update's responses.
        with Timer(timings, "time/training", hardware.device):
            train_stats = optimise(accelerator, policy, value, optimizer, batch, scored, advantages, returns,
                                   spec, update, ptx_texts, tokenizer)

        # Adapt beta to the KL this update measured (over every process).
        rollout_stats = rollout_metrics(scored, batch, rewards, beta, spec)
        metrics = global_mean(accelerator, {**rollout_stats, **train_stats, **timings})
        kl_controller.update(metrics["ppo/kl"], spec.rollout_batch_size * accelerator.num_processes)
        ctx.log_metrics(update, metrics)
        ctx.set_progress(update, spec.updates)

        # Cancel, checkpoint, samples. Processes vote, so that all stop together.
        stopping = update < spec.updates and stop_agreed(ctx, accelerator)
        checkpoint = None
        if update < spec.updates and (update % spec.save_every == 0 or stopping):
            checkpoint = save_checkpoint(ctx, writer, accelerator, update, policy, value, optimizer,
                                         kl_controller, tokenizer)
        # Samples even when stopping: the resumed run starts after this update.
        if update % spec.sample_every == 0 or update == spec.updates:
            # The last update's weights are the ones final/ receives below.
            holder = checkpoint if checkpoint else ctx.final_dir if update == spec.updates else None
            store_rollout_samples(ctx, accelerator, batch, scored, rewards, update, holder, spec)
            with full_weights_for_generation(policy):
                answer_eval_prompts(evaluator, accelerator, models, update, str(holder) if holder else None)
            ctx.log(f"update {update}/{spec.updates}: reward-model score {metrics['ppo/rm_score']:.3f}, "
                    f"KL {metrics['ppo/kl']:.3f}, beta {beta:.4g}, length {metrics['ppo/response_length']:.1f}")
        if stopping:
            ctx.flush()
            accelerator.wait_for_everyone()
            raise StageCancelled(f"stopped after update {update} of {spec.updates}; checkpoint saved")

    # -- save ------------------------------------------------------------------
    # final/: the policy as a plain causal LM (LoRA merged, the adapter alone in adapter/).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        provenance = stage_provenance(ctx)  # the run, the stage and its source, as the Trainer's stages record
        save_final(accelerator.unwrap_model(policy), tokenizer, ctx.final_dir, base=parent_weights(ctx),
                   provenance=provenance)
        record_source(ctx, provenance)
    accelerator.wait_for_everyone()
    ctx.checkpoint_saved(spec.updates, ctx.final_dir, is_final=True)
    ctx.flush()


# --- models -------------------------------------------------------------------------


@dataclass
class Models:
    tokenizer: PreTrainedTokenizerBase  # the policy's
    policy: PreTrainedModel  # trainable: every weight, or a peft model with adapters
    reference: PreTrainedModel | None  # frozen; None with LoRA (the policy with adapters off)
    value: TokenValues
    reward_model: PreTrainedModel
    reward_tokenizer: PreTrainedTokenizerBase
    reward_max_length: int | None
    policy_source: Source
    reward_source: Source
    parent_name: str  # how samples record the starting policy
    activation_checkpointing: bool = False  # the policy's and the value network's layers

    def reference_logits(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(*args, **kwargs).logits
        with self.policy.disable_adapter():  # a peft model
            return self.policy(*args, **kwargs).logits


def build_optimizer(policy: torch.nn.Module, value: torch.nn.Module, spec: PPOSpec,
                    settings: dict[str, Any]) -> torch.optim.AdamW:
    """One AdamW, two parameter groups: the policy's and the value network's
    learning rates may differ, and a single optimizer keeps fp16 loss
    scaling (one unscale, one step per minibatch) correct. `settings`: the
    [trainer] table's AdamW keywords (betas, eps, amsgrad, fused, foreach)."""
    value_lr = spec.value_learning_rate or spec.learning_rate
    return torch.optim.AdamW(
        [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": spec.learning_rate},
         {"params": [p for p in value.parameters() if p.requires_grad], "lr": value_lr}],
        weight_decay=spec.weight_decay,
        **settings,
    )


def load_models(ctx: StageContext, spec: PPOSpec, device: torch.device, resume: Path | None, *,
                hardware: runtime.Runtime) -> Models:
    """Tokenizers and the four models, on this process's device. On resume the
    policy and value network come from the checkpoint, the reference and the
    reward model from where they always come from.

    Memory: the frozen models (the reward model, and the reference when it
    is a copy) are held in the compute precision, or in 4 or 8 bits
    (`frozen_quantization`); with `quantization` (QLoRA) the policy and the
    value network are each a frozen body in 4 or 8 bits training LoRA
    adapters (and the value network its score head)."""
    qlora = spec.quantization != "none"

    # -- the policy's tokenizer -------------------------------------------------
    policy_source = ctx.resolve(spec.from_)  # type: ignore[arg-type]  # required by the spec
    _tokenizer_source, tokenizer = load_stage_tokenizer(
        policy_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, log=ctx.log)
    if tokenizer.eos_token_id is None:
        raise StageFailed("the policy's tokenizer has no eos token: a response could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # only ever padding after a response's end

    # -- the policy and its reference --------------------------------------------
    if policy_source.kind == "builtin":
        ctx.log(f"from builtin:{policy_source.value}: PPO on a randomly initialised policy", level="warning")
    if qlora:
        base = quantized.load_causal_lm(policy_source, spec.quantization, hardware)
    else:
        base = load_model_for_training(policy_source, tokenizer, seed=spec.seed)
    checkpointing = runtime.activation_checkpointing(spec.activation_checkpointing, hardware,
                                                     count_parameters(base), quantized=qlora)
    reference = None
    if spec.lora is None:
        # Frozen and only ever run forward: in the compute precision (bf16 on
        # GPUs that support it: the KL at the first update is then bf16's
        # rounding, not exactly 0, for half the memory), or quantized.
        if spec.frozen_quantization != "none":
            reference = quantized.load_causal_lm(policy_source, spec.frozen_quantization, hardware,
                                                 field="frozen_quantization")
        else:
            reference = copy.deepcopy(base) if resume is None else base
            reference.to(device=device, dtype=dtype_for(hardware.precision))
        if resume is not None:
            base = load_model_for_training(Source("path", str(resume)), tokenizer, seed=spec.seed)
        reference.requires_grad_(False).eval()

    # -- the value network -------------------------------------------------------
    # Built before LoRA wraps the policy: from the policy it copies the bare body.
    reward_source = ctx.resolve(spec.reward_model)  # type: ignore[arg-type]  # required by the spec
    reward_tokenizer = load_tokenizer(reward_source, ctx.cache_dir)
    shared_vocabulary = reward_tokenizer.get_vocab() == tokenizer.get_vocab()
    if spec.value_from == "reward" and not shared_vocabulary:
        raise StageFailed(
            "value_from = 'reward' needs the reward model to share the policy's tokenizer (its values "
            "sit on the policy's tokens), but their vocabularies differ; set value_from = 'policy'"
        )
    if qlora:
        classifier = quantized_value_network(spec, hardware, policy_source, reward_source, resume,
                                             checkpointing=checkpointing)
    elif resume is not None:
        classifier = load_classifier(str(resume / VALUE_FOLDER), dtype=torch.float32)
    elif spec.value_from == "reward":
        classifier = load_classifier(reward_source.value, dtype=torch.float32)
    else:
        classifier = value_network_from(base, seed=spec.seed)
    value = TokenValues(classifier)

    # -- LoRA --------------------------------------------------------------------
    if checkpointing and not qlora:  # (a quantized body has it from prepare_for_adapters)
        enable_activation_checkpointing(base)
        enable_activation_checkpointing(classifier)
    policy: PreTrainedModel = base
    if spec.lora is not None:
        from peft import PeftModel, get_peft_model

        if resume is not None:
            policy = PeftModel.from_pretrained(base, str(resume), is_trainable=True)
        else:
            torch.manual_seed(spec.seed)  # the adapters' random init is part of what the seed reproduces
            policy = get_peft_model(base, runtime.lora_config(spec.lora, "CAUSAL_LM"))
    if not qlora:  # quantized bodies were loaded onto this process's GPU, and cannot move
        policy.to(device)
        value.to(device)
    # No dropout (see the module docstring): eval mode. transformers checkpoints
    # a layer only in training mode, so with activation checkpointing the two
    # train with every dropout rate set to 0 instead.
    for model in (policy, value):
        if checkpointing:
            without_dropout(model).train()
        else:
            model.eval()

    # -- the reward model ----------------------------------------------------------
    # Frozen and only ever run forward: in the compute precision (bf16 on GPUs
    # that support it), or quantized (frozen_quantization).
    reward_model = quantized.load_frozen_classifier(reward_source.value, spec.frozen_quantization, hardware)
    if not quantized.is_quantized(reward_model):
        reward_model.to(device)
    if not reward_tokenizer.chat_template:
        # The reward stage frames its pairs in the built-in template when its tokenizer has none.
        reward_tokenizer.chat_template = CHAT_TEMPLATE
    if reward_tokenizer.pad_token_id is None:
        reward_tokenizer.pad_token = reward_tokenizer.eos_token
    if reward_model.config.pad_token_id is None:
        # The model reads its score at the last token that is not padding.
        reward_model.config.pad_token_id = reward_tokenizer.pad_token_id
    if not shared_vocabulary:
        ctx.log("the reward model has its own tokenizer: responses are decoded and re-tokenised for it")

    return Models(
        tokenizer=tokenizer, policy=policy, reference=reference, value=value, reward_model=reward_model,
        reward_tokenizer=reward_tokenizer, reward_max_length=max_positions(reward_source),
        policy_source=policy_source, reward_source=reward_source,
        parent_name=policy_source.value if policy_source.kind == "path"
        else f"{policy_source.kind}:{policy_source.value}",
        activation_checkpointing=checkpointing,
    )


def value_network_from(policy: PreTrainedModel, *, seed: int) -> PreTrainedModel:
    """A sequence-classification model with the policy's body and a zeroed
    head: V = 0 everywhere at first, an estimate with no opinion, rather than
    a random one the first advantages would inherit."""
    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    torch.manual_seed(seed)
    classifier = AutoModelForSequenceClassification.from_config(config)
    classifier.base_model.load_state_dict(policy.base_model.state_dict())
    _zero(_score_head(classifier))
    return classifier.to(torch.float32)


def quantized_value_network(spec: PPOSpec, hardware: runtime.Runtime, policy_source: Source, reward_source: Source,
                            resume: Path | None, *, checkpointing: bool) -> Any:  # -> peft.PeftModel
    """Under QLoRA, the value network as the policy is: a body in 4 or 8 bits
    (the reward model's, or the policy's with a zeroed head), frozen, with
    LoRA adapters of the same lora table; its score head trains in full.
    Held in full it would be a second full model with gradients and AdamW
    state, most of PPO's memory. On resume the adapters and head come from
    the checkpoint's value/ folder."""
    from peft import PeftModel, get_peft_model

    where = reward_source if spec.value_from == "reward" else policy_source
    classifier = quantized.load_scoring_body(where, spec.quantization, hardware)
    if spec.value_from == "policy":
        _zero(_score_head(classifier))  # V = 0 at first, as value_network_from
    classifier = quantized.prepare_for_adapters(classifier, checkpointing=checkpointing)
    if resume is not None:
        return PeftModel.from_pretrained(classifier, str(resume / VALUE_FOLDER), is_trainable=True)
    torch.manual_seed(spec.seed + 1)  # (the policy's adapters draw from spec.seed)
    return get_peft_model(classifier, runtime.lora_config(spec.lora, "SEQ_CLS"))


def _score_head(classifier: Any) -> torch.nn.Module:
    """The linear head a classifier scores with; under LoRA, peft's wrapper
    around it (the copy it trains in full)."""
    for name in ("score", "classifier"):
        head = getattr(classifier, name, None)
        if isinstance(head, torch.nn.Module) and isinstance(getattr(head, "original_module", head), torch.nn.Linear):
            return head
    raise StageFailed(f"{type(classifier).__name__} has no linear score head to read values per token from")


@torch.no_grad()
def _zero(head: torch.nn.Module) -> None:
    for parameter in head.parameters():
        parameter.zero_()


class TokenValues(torch.nn.Module):
    """A sequence-classification model read at every position, not only the
    last: V(state before each token). A module of its own so that DDP wraps
    (and averages the gradients of) exactly what the value loss trains."""

    def __init__(self, classifier: Any) -> None:  # a classifier, or a peft model of one (QLoRA)
        super().__init__()
        self.classifier = classifier
        inner = classifier.get_base_model() if hasattr(classifier, "get_base_model") else classifier
        self.body = inner.base_model  # (with peft's adapters in its layers, under QLoRA)
        self.head = _score_head(inner)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        body = self.body(input_ids=input_ids, attention_mask=attention_mask,
                                          position_ids=position_ids, use_cache=False)
        return self.head(body.last_hidden_state).squeeze(-1).float()


# --- prompts ------------------------------------------------------------------------


class PromptOrder:
    """Which prompts update u samples on process r: the prompts go round in an
    order shuffled afresh each pass (seeded by the seed and the pass), and
    update u takes the next `per_process x processes` of them. A function of
    (update, process), so a resumed run takes the prompts an uninterrupted
    one would have."""

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def take(self, update: int, process: int, per_process: int, processes: int) -> list[int]:
        first = (update - 1) * per_process * processes + process * per_process
        return [self._at(i) for i in range(first, first + per_process)]

    def _at(self, position: int) -> int:
        epoch, offset = divmod(position, self.count)
        if epoch not in self._orders:
            order = list(range(self.count))
            random.Random(f"{self.seed}:prompts:{epoch}").shuffle(order)
            self._orders = {epoch: order}  # passes are consumed in order: keep one
        return self._orders[epoch][offset]


def rollout_seed(seed: int, update: int, process: int) -> int:
    """A distinct, reproducible sampling seed per (update, process)."""
    return (seed * 1_000_003 + update * 10_007 + process) % (2**63)


# --- rollout ------------------------------------------------------------------------


@dataclass
class Rollout:
    prompts: list[str]
    prompt_ids: torch.Tensor  # (B, P), padded on the left
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R), padding after each response's end
    response_mask: torch.Tensor  # (B, R) float: 1 on the tokens the policy chose, its eos included
    ended: torch.Tensor  # (B,) bool: the response ended with eos within max_new_tokens
    texts: list[str]  # the responses as text (special tokens left out)

    def __len__(self) -> int:
        return len(self.prompts)


def rollout(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
            settings: SamplingSettings) -> Rollout:
    """One sampled response per prompt, with the KV cache, from the whole
    distribution at `temperature` (top_k off), the distribution whose
    probabilities PPO computes."""
    sampled = generate_tokens(policy, tokenizer, prompts, settings, top_k=0)
    response_ids = sampled.response_ids
    length = response_ids.shape[1]
    is_eos = response_ids == tokenizer.eos_token_id
    ended = is_eos.any(dim=1)
    # The eos is part of the response: choosing to stop is an action too.
    lengths = torch.where(ended, is_eos.int().argmax(dim=1) + 1, length)
    response_mask = (torch.arange(length, device=response_ids.device)[None, :] < lengths[:, None]).float()
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    texts = [
        tokenizer.decode(ids[: n - int(end)], skip_special_tokens=True).strip()
        for ids, n, end in zip(response_ids.tolist(), lengths.tolist(), ended.tolist())
    ]
    return Rollout(prompts, sampled.prompt_ids, sampled.prompt_mask, response_ids, response_mask, ended, texts)


def sequence_inputs(batch: Rollout, rows: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    """Prompt + response of some rows, with the position ids generation used
    (counted from each row's first real token, not from its padding)."""
    input_ids = torch.cat([batch.prompt_ids[rows], batch.response_ids[rows]], dim=1)
    attention_mask = torch.cat([batch.prompt_mask[rows], batch.response_mask[rows].long()], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def response_logits(model: Any, inputs: dict[str, torch.Tensor], response_length: int,
                    temperature: float) -> torch.Tensor:
    """Logits predicting each response token, at the sampling temperature (the
    probabilities must be those of the distribution the tokens came from).
    Only the last response_length + 1 positions go through the LM head."""
    logits = model(**inputs, use_cache=False, logits_to_keep=response_length + 1).logits
    return logits[:, :response_length].float() / temperature


def response_values(value: Any, inputs: dict[str, torch.Tensor], response_length: int) -> torch.Tensor:
    """V at the positions that predict each response token (the state before it)."""
    values = value(**inputs)
    return values[:, -response_length - 1:-1]


# --- scoring ------------------------------------------------------------------------


@dataclass
class Scored:
    logprobs: torch.Tensor  # (B, R) under the policy that sampled
    ref_logprobs: torch.Tensor  # (B, R) under the reference
    values: torch.Tensor  # (B, R)
    entropy: torch.Tensor  # (B, R) of the policy's distribution at each token
    rm_scores: torch.Tensor  # (B,) the reward model's, as it gave them
    scores: torch.Tensor  # (B,) after the no-eos penalty
    kl: torch.Tensor  # (B, R) per-token KL estimate, 0 on padding


@torch.no_grad()
def score(accelerator: Accelerator, models: Models, policy: Any, value: Any, batch: Rollout,
          spec: PPOSpec) -> Scored:
    """Everything PPO needs to know about the responses, before any step.
    Forward passes go in minibatch-sized chunks to bound memory."""
    unwrapped_policy = accelerator.unwrap_model(policy)
    unwrapped_value = accelerator.unwrap_model(value)
    length = batch.response_ids.shape[1]
    parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, len(batch), spec.minibatch_size):
        rows = slice(start, start + spec.minibatch_size)
        inputs = sequence_inputs(batch, rows)
        tokens = batch.response_ids[rows]
        logits = response_logits(unwrapped_policy, inputs, length, spec.temperature)
        parts["logprobs"].append(ppo_math.logprobs_of(logits, tokens))
        parts["entropy"].append(ppo_math.entropy_from_logits(logits))
        del logits
        ref_logits = models.reference_logits(**inputs, use_cache=False, logits_to_keep=length + 1)
        ref_logits = ref_logits[:, :length].float() / spec.temperature
        parts["ref_logprobs"].append(ppo_math.logprobs_of(ref_logits, tokens))
        del ref_logits
        parts["values"].append(response_values(unwrapped_value, inputs, length))
    joined = {name: torch.cat(chunks) for name, chunks in parts.items()}
    mask = batch.response_mask
    rm_scores = reward_model_scores(models, batch.prompts, batch.texts, batch_size=spec.minibatch_size)
    # A response that never ended is cut, not finished: the reward model may
    # like the cut text, so it costs a stated penalty instead.
    scores = rm_scores - spec.no_eos_penalty * (~batch.ended).float()
    kl = ppo_math.per_token_kl(joined["logprobs"], joined["ref_logprobs"], spec.kl_estimator) * mask
    return Scored(logprobs=joined["logprobs"] * mask, ref_logprobs=joined["ref_logprobs"] * mask,
                  values=joined["values"] * mask, entropy=joined["entropy"], rm_scores=rm_scores,
                  scores=scores, kl=kl)


@torch.no_grad()
def reward_model_scores(models: Models, prompts: list[str], responses: list[str], *,
                        batch_size: int) -> torch.Tensor:
    """The reward model's score of each (prompt, response), from text: each
    pair is framed as the reward stage framed its training pairs (a user
    turn and the assistant's answer, in the reward tokenizer's chat
    template), so a reward model with its own tokenizer works as well as
    one sharing the policy's. Too long a text keeps its end, where the
    score is read."""
    tokenizer, model = models.reward_tokenizer, models.reward_model
    device = next(model.parameters()).device
    conversations = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                     for p, r in zip(prompts, responses)]
    texts = tokenizer.apply_chat_template(conversations, tokenize=False)
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    scores = []
    try:
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False, truncation=models.reward_max_length is not None,
                                max_length=models.reward_max_length).to(device)
            scores.append(model(**encoded).logits[:, 0].float())
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return torch.cat(scores)


def advantages_and_returns(accelerator: Accelerator, scored: Scored, batch: Rollout, spec: PPOSpec,
                           beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token rewards (score at the end, -beta * KL on every token), GAE
    advantages and returns, advantages whitened over the global batch."""
    mask = batch.response_mask
    rewards = ppo_math.token_rewards(scored.scores, scored.kl, beta, mask)
    advantages, returns = ppo_math.gae(rewards, scored.values, mask, gamma=spec.gamma, lam=spec.lam)
    if spec.whiten_advantages:
        moments = accelerator.reduce(ppo_math.masked_moments(advantages, mask), reduction="sum")
        advantages = ppo_math.masked_whiten(advantages, mask, moments=moments)
    return advantages, returns, rewards


# --- optimising ---------------------------------------------------------------------


def optimise(accelerator: Accelerator, policy: Any, value: Any, optimizer: Any, batch: Rollout, scored: Scored,
             advantages: torch.Tensor, returns: torch.Tensor, spec: PPOSpec, update: int,
             ptx_texts: list[str], tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """ppo_epochs passes over the responses in shuffled minibatches, one
    optimizer step each. Returns the mean of each loss and statistic."""
    totals: dict[str, float] = defaultdict(float)
    steps = 0
    length = batch.response_ids.shape[1]
    policy_parameters = [p for p in policy.parameters() if p.requires_grad]
    value_parameters = [p for p in value.parameters() if p.requires_grad]
    for epoch in range(spec.ppo_epochs):
        generator = torch.Generator().manual_seed(rollout_seed(spec.seed, update, accelerator.process_index)
                                                  + 7919 * (epoch + 1))
        order = torch.randperm(len(batch), generator=generator).to(batch.response_ids.device)
        for step, start in enumerate(range(0, len(batch), spec.minibatch_size)):
            rows = order[start:start + spec.minibatch_size]
            mask = batch.response_mask[rows]
            if ptx_texts:
                # PPO-ptx: its gradient accumulates first, without a DDP sync;
                # the PPO backward below syncs the sum of both.
                with accelerator.no_sync(policy):
                    with accelerator.autocast():
                        ptx_loss = language_modelling_loss(policy, tokenizer, ptx_batch(
                            ptx_texts, spec, update, epoch, step, accelerator.process_index), spec.ptx_max_length)
                    accelerator.backward(spec.ptx_coef * ptx_loss)
                totals["ppo/ptx_loss"] += ptx_loss.item()
            with accelerator.autocast():
                inputs = sequence_inputs(batch, rows)
                logits = response_logits(policy, inputs, length, spec.temperature)
                logprobs = ppo_math.logprobs_of(logits, batch.response_ids[rows])
                del logits
                values = response_values(value, inputs, length)
            policy_loss = ppo_math.clipped_policy_loss(
                logprobs, scored.logprobs[rows], advantages[rows], mask, clip_range=spec.clip_range)
            value_loss = ppo_math.clipped_value_loss(
                values, scored.values[rows], returns[rows], mask, clip_range_value=spec.clip_range_value)
            accelerator.backward(policy_loss.loss + spec.vf_coef * value_loss.loss)
            # Each network clipped on its own: the value loss's gradients
            # (often much larger early on) must not shrink the policy's step.
            accelerator.unscale_gradients()
            policy_norm = torch.nn.utils.clip_grad_norm_(policy_parameters, spec.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(value_parameters, spec.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            totals["ppo/policy_loss"] += policy_loss.loss.item()
            totals["ppo/value_loss"] += value_loss.loss.item()
            totals["ppo/clip_fraction"] += policy_loss.clip_fraction.item()
            totals["ppo/value_clip_fraction"] += value_loss.clip_fraction.item()
            totals["ppo/approx_kl"] += policy_loss.approx_kl.item()
            totals["ppo/grad_norm"] += float(policy_norm)
            steps += 1
    return {key: total / steps for key, total in totals.items()}


def read_ptx_texts(ctx: StageContext, spec: PPOSpec, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """PPO-ptx data as whole texts: instructions framed in the chat template
    (as SFT framed them), conversations likewise, plain text as it is."""
    source = ctx.resolve(spec.ptx_data)  # type: ignore[arg-type]  # the spec requires it with ptx_coef
    records = load_records(source, cache_dir=ctx.cache_dir, max_records=100_000)
    data_format, examples = instruction_examples(records, where=source.value)
    texts = []
    for example in examples:
        if "text" in example:
            texts.append(example["text"])
            continue
        if "messages" in example:
            messages = example["messages"]
        else:
            prompt, completion = example["prompt"], example["completion"]
            messages = [*(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]),
                        *(completion if isinstance(completion, list)
                          else [{"role": "assistant", "content": completion}])]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    ctx.log(f"PPO-ptx: {len(texts)} examples ({data_format}) from {source.value}, coefficient {spec.ptx_coef}")
    return texts


def ptx_batch(texts: list[str], spec: PPOSpec, update: int, epoch: int, step: int, process: int) -> list[str]:
    """minibatch_size PPO-ptx examples for one step, drawn by (seed, update,
    epoch, step, process), so a resumed run draws the same ones."""
    draw = random.Random(f"{spec.seed}:ptx:{update}:{epoch}:{step}:{process}")
    return [texts[draw.randrange(len(texts))] for _ in range(spec.minibatch_size)]


def language_modelling_loss(policy: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                            max_length: int) -> torch.Tensor:
    """Mean next-token loss over every real token of the texts (cut at max_length)."""
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                            add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    device = next(iter(policy.parameters())).device
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return policy(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss


# --- reporting ----------------------------------------------------------------------


def rollout_metrics(scored: Scored, batch: Rollout, rewards: torch.Tensor, beta: float,
                    spec: PPOSpec) -> dict[str, float]:
    """What the responses of this update were like, on this process."""
    mask = batch.response_mask
    kl_per_response = scored.kl.sum(1)
    return {
        "ppo/rm_score": scored.rm_scores.mean().item(),
        # score - penalty - beta * KL: what PPO maximises, per response
        "ppo/reward": rewards.sum(1).mean().item(),
        "ppo/kl": kl_per_response.mean().item(),
        "ppo/beta": beta,
        "ppo/entropy": ppo_math.masked_mean(scored.entropy, mask).item(),
        "ppo/response_length": mask.sum(1).mean().item(),
        "ppo/ended_fraction": batch.ended.float().mean().item(),
        "ppo/value_mean": ppo_math.masked_mean(scored.values, mask).item(),
    }


def global_mean(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over processes (every process has as many responses)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float32, device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


def store_rollout_samples(ctx: StageContext, accelerator: Accelerator, batch: Rollout, scored: Scored,
                          rewards: torch.Tensor, update: int, checkpoint: Path | None, spec: PPOSpec) -> None:
    """A few of this update's responses, with what PPO made of them: the
    reward it maximised, the reward model's score and the KL. Side by side
    with the metrics they show whether reward rises by answering better or
    by exploiting the reward model."""
    count = min(spec.samples_per_update, len(batch))
    if not count or not accelerator.is_main_process:
        return
    prompt_ids = ctx.add_prompts([{"text": p, "source": spec.prompts} for p in batch.prompts[:count]])
    ctx.log_samples(
        [{"prompt_id": prompt_id, "response": batch.texts[i],
          "meta": {"kind": "rollout", "reward": round(rewards[i].sum().item(), 4),
                   "rm_score": round(scored.rm_scores[i].item(), 4), "kl": round(scored.kl[i].sum().item(), 4),
                   "tokens": int(batch.response_mask[i].sum().item()), "finished": bool(batch.ended[i])}}
         for i, prompt_id in zip(range(count), prompt_ids)],
        step=update, checkpoint=str(checkpoint) if checkpoint else None,
    )


def answer_eval_prompts(evaluator: EvalAnswers, accelerator: Accelerator, models: Models, update: int,
                        checkpoint: str | None) -> None:
    """The eval prompts answered by the policy (greedy by default), stored as
    samples with the reward model's score beside the judge's:
    `eval/judge_score` beside `eval/rm_score` is where reward hacking shows
    (the reward model's score rising while the judge's falls)."""
    if not accelerator.is_main_process:
        return
    evaluator.answer(
        models.policy, update, checkpoint, autocast=accelerator.autocast, sample_meta={"kind": "eval"},
        reward_model=lambda prompts, responses: reward_model_scores(models, prompts, responses,
                                                                    batch_size=16).tolist(),
    )


def _resolved_config(spec: PPOSpec, models: Models, accelerator: Accelerator, rows: list[dict[str, Any]],
                     evaluator: EvalAnswers, ptx_texts: list[str], value_lr: float) -> dict[str, Any]:
    policy = models.policy
    return {
        **spec.model_dump(by_alias=True, mode="json"),
        "world_size": accelerator.num_processes,
        "value_learning_rate": value_lr,
        "responses_per_update": spec.rollout_batch_size * accelerator.num_processes,
        "policy": {
            "class": type(policy).__name__,
            "source": f"{models.policy_source.kind}:{models.policy_source.value}",
            "parameters": count_parameters(policy),
            "trainable_parameters": sum(p.numel() for p in policy.parameters() if p.requires_grad),
            "reference": "the policy with adapters off" if models.reference is None
            else f"a frozen copy ({_held_as(models.reference)})",
            "activation_checkpointing": models.activation_checkpointing,
        },
        "value": {"starts_from": spec.value_from, "class": type(models.value.classifier).__name__,
                  "parameters": count_parameters(models.value)},
        "reward_model": {
            "source": f"{models.reward_source.kind}:{models.reward_source.value}",
            "class": type(models.reward_model).__name__,
            "held_as": _held_as(models.reward_model),
            "parameters": count_parameters(models.reward_model),
            "tokenizer": describe_tokenizer(models.reward_tokenizer, models.reward_source),
            "shares_policy_tokenizer": models.reward_tokenizer.get_vocab() == models.tokenizer.get_vocab(),
        },
        "tokenizer": describe_tokenizer(models.tokenizer, models.policy_source),
        "prompts": {"source": spec.prompts, "count": len(rows)},
        "eval_prompts": evaluator.describe(),
        "ptx_examples": len(ptx_texts),
    }


def _held_as(model: PreTrainedModel) -> str:
    """How a frozen model is held in memory: "4bit", "8bit" or its dtype (bfloat16...)."""
    if quantized.is_quantized(model):
        return "4bit" if getattr(model, "is_loaded_in_4bit", False) else "8bit"
    return str(model.dtype).removeprefix("torch.")


# --- stopping and checkpoints ----------------------------------------------------------


def stop_agreed(ctx: StageContext, accelerator: Accelerator) -> bool:
    """Whether to stop after this update, agreed by every process (each polls
    the store on its own clock; one leaving while another waits in the next
    all-reduce would hang both)."""
    stop = ctx.should_stop()
    if accelerator.num_processes > 1:
        vote = torch.tensor([1.0 if stop else 0.0], device=accelerator.device)
        stop = accelerator.reduce(vote, reduction="sum").item() > 0
    return stop


def _resume_folder(ctx: StageContext) -> Path | None:
    if ctx.resume_from is None:
        return None
    folder = Path(ctx.resume_from)
    if not (folder / STATE_FILE).is_file():
        raise StageFailed(f"cannot resume: {folder} is not a PPO checkpoint (no {STATE_FILE})")
    return folder


def save_checkpoint(ctx: StageContext, writer: CheckpointWriter, accelerator: Accelerator, update: int,
                    policy: Any, value: Any, optimizer: Any, kl_controller: ppo_math.FixedKLController,
                    tokenizer: PreTrainedTokenizerBase) -> Path:
    """checkpoint-UPDATE/: the policy as a Hugging Face folder (or its
    adapter), value/, ppo_state.pt (optimizer, beta, update counter) and
    trainer_state.json (the engine's mark of a complete checkpoint); each
    process adds its RNG states. Staged and renamed into place whole, old
    ones pruned so that the store never lists a half-deleted folder
    (engine/stages/common/checkpoint_writing.py)."""
    staged = writer.begin(update)
    torch.save(_rng_states(), staged / f"rng_state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        accelerator.unwrap_model(policy).save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        accelerator.unwrap_model(value).classifier.save_pretrained(staged / VALUE_FOLDER)
        torch.save({"update": update, "optimizer": optimizer.state_dict(),
                    "kl_controller": kl_controller.state_dict()}, staged / STATE_FILE)
        # Last, by the engine's convention: the file `rlhf resume` looks for
        # to tell a complete checkpoint (engine/runtime/checkpoints.py).
        (staged / CHECKPOINT_DONE_MARKER).write_text(json.dumps(
            {"global_step": update, "stage": "ppo", "beta": kl_controller.beta}, indent=2) + "\n")
    folder = writer.publish(update)
    record_and_prune(ctx, writer, update, folder)
    accelerator.wait_for_everyone()
    return folder


def load_training_state(folder: Path, accelerator: Accelerator, optimizer: Any,
                        kl_controller: ppo_math.FixedKLController) -> int:
    """Optimizer, beta and RNG states from a checkpoint; the update it was saved after."""
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    kl_controller.load_state_dict(state["kl_controller"])
    rng = folder / f"rng_state_{accelerator.process_index}.pt"
    if rng.is_file():
        _set_rng_states(torch.load(rng, map_location="cpu", weights_only=True))
    return int(state["update"])


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    torch.random.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# --- timing -------------------------------------------------------------------------


class Timer:
    """Adds the seconds of a block to timings[key] (after the GPU has finished)."""

    def __init__(self, timings: dict[str, float], key: str, device: str) -> None:
        self.timings, self.key, self.cuda = timings, key, device == "cuda"

    def __enter__(self) -> None:
        self._sync()
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.timings[self.key] = self.timings.get(self.key, 0.0) + time.perf_counter() - self.started

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

