"""Supervised fine-tuning: teach a model to answer instructions, with trl's SFTTrainer.

`run(ctx)` reads top to bottom: pick the device, load the tokenizer, load
and normalise the instruction data, build the model (every weight, LoRA
adapters, or QLoRA on a quantized base), train, save.

The loss falls on the answers only: the completion of a prompt/completion
pair (alpaca rows become such pairs), the assistant turns of a conversation
(the chat template's `{% generation %}` markers say which tokens those are).
Plain `text` rows learn every token. Prompts are wrapped in the tokenizer's
chat template (the built-in one when it has none), exactly as
`generation.generate` wraps them later, so the model is asked at inference
the way it was taught.

While it trains, the model answers a fixed set of eval prompts every
`sample_every` steps (and before the first step and after the last), greedy
by default; the answers go to the store as samples with their step and the
checkpoint holding those exact weights, so a person watches answers change.
A judge scores each answer (engine/stages/common/eval_answers.py: the demo's
rule-based judge, on demo-task prompts), and the mean is the metric
`eval/judge_score`; prompts the judge cannot parse get no score rather than a
made-up one.

The output folder `final/` loads with plain transformers: for LoRA it holds
the merged model, and `final/adapter/` the adapter alone (peft loads it onto
the parent model).

Device-aware defaults: on the CPU fp32, no activation checkpointing (it only
costs time on small models) and no pinned memory; on a GPU bf16 where
supported, activation checkpointing for models of 100M+ parameters or
quantized ones, and padding to multiples of 8 for tensor cores.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime

# isort: split

import warnings
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from engine.errors import StageFailed
from engine.stages.common import quantized
from engine.stages.common.callbacks import attach_stage_callback, train_resumably
from engine.stages.common.context import StageContext, checkpoint_name
from engine.stages.common.data_loading import (
    held_out_prompts,
    instruction_examples,
    load_records,
    split_examples,
)
from engine.stages.common.eval_answers import EvalAnswersCallback
from engine.stages.common.models import describe_trained_model
from engine.stages.common.prologue import begin
from engine.stages.common.saving import parent_weights, save_trained
from engine.stages.common.tokenizer import describe_tokenizer, load_stage_tokenizer
from engine.stages.sft.spec import SFTSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, SFTSpec)
    quantized.require(spec, hardware)

    trainer, sampler = build_trainer(ctx, hardware)
    callback = attach_stage_callback(trainer, ctx)
    sampler.stage_callback = callback
    trainer.add_callback(sampler)

    # -- train -----------------------------------------------------------------
    # Resuming restores weights (or adapters), optimizer, scheduler, RNG
    # states and the position in the data: the curves continue exactly.
    step = train_resumably(trainer, ctx, callback, max_steps=spec.max_steps)

    # -- save ------------------------------------------------------------------
    save_trained(trainer, ctx, step, base=parent_weights(ctx))


def build_trainer(ctx: StageContext, hardware: runtime.Runtime) -> tuple[SFTTrainer, EvalAnswersCallback]:
    """Everything up to `train()`: tokenizer, data, model, config, trainer,
    and the callback that answers the eval prompts (not attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, SFTSpec)
    # peft asks the model a question transformers renamed; the answer is the same.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    # -- tokenizer -------------------------------------------------------------
    # A preset starts from nothing, so it takes the built-in tokenizer; a
    # checkpoint keeps its own, since its embeddings were learned for it.
    model_source = ctx.resolve(spec.from_)
    tokenizer_source, tokenizer = load_stage_tokenizer(
        model_source, ctx.resolve_optional(spec.tokenizer), ctx.cache_dir, log=ctx.log)
    if tokenizer.eos_token is None:
        raise StageFailed("the tokenizer has no eos token to end an answer with")

    # -- data ------------------------------------------------------------------
    # Every format becomes {prompt, completion} (prompts in the chat template),
    # {messages} or {text}. Whole prompts are held out for the eval loss, so
    # no question is both trained on and evaluated; the eval set is cut to
    # what eval_batches batches consume, which bounds every evaluation's cost.
    if spec.data is None:  # the pipeline loader requires it, or fills in the demo's for a demo model
        raise StageFailed("no instruction data: name it with `data`")
    data_source = ctx.resolve(spec.data)
    records = load_records(data_source, cache_dir=ctx.cache_dir, max_records=spec.max_examples)
    data_format, examples = instruction_examples(
        records, spec.format, prompt_field=spec.prompt_field, completion_field=spec.completion_field,
        messages_field=spec.messages_field, text_field=spec.text_field, where=data_source.value,
    )
    if data_format in ("prompt_completion", "alpaca"):
        examples = [as_chat(e) for e in examples]
    assistant_only = False
    if data_format == "messages" and spec.completion_only_loss:
        examples, assistant_only = _conversations_for_answer_loss(ctx, tokenizer, examples)
    train_examples, eval_examples = split_examples(examples, spec.eval_fraction, spec.seed)
    # With no eval_prompts named, the model answers held-out prompts of this data: the user's task.
    held_out = held_out_prompts(eval_examples, source=f"{data_source.kind}:{data_source.value}")
    eval_examples = eval_examples[: spec.eval_batches * spec.batch_size]
    ctx.log(
        f"data: {len(examples)} examples ({data_format}) from {checkpoint_name(data_source)}: "
        f"{len(train_examples)} to train on, {len(eval_examples)} held out for the eval loss"
    )

    # -- model -----------------------------------------------------------------
    model, parameters, checkpointing = quantized.load_trainable_causal_lm(
        model_source, tokenizer, hardware, quantization=spec.quantization,
        checkpointing_setting=spec.activation_checkpointing, seed=spec.seed)
    if model_source.kind == "builtin":
        ctx.log(f"from builtin:{model_source.value}: fine-tuning a randomly initialised model", level="warning")
    peft_config = None
    if spec.lora is not None:
        peft_config = runtime.lora_config(spec.lora, "CAUSAL_LM")

    # -- trainer ---------------------------------------------------------------
    args = runtime.library_config(SFTConfig, spec,
        **runtime.training_kwargs(spec, hardware, ctx.checkpoints_dir),
        max_length=spec.max_length,
        completion_only_loss=spec.completion_only_loss if data_format != "text" else False,
        assistant_only_loss=assistant_only,
        # TRL turns checkpointing on by default, which costs ~30% on tiny models.
        activation_checkpointing=checkpointing,
        pad_to_multiple_of=8 if hardware.device == "cuda" else None,
        # Only the loss: keeping every eval batch's logits costs memory for nothing.
        prediction_loss_only=True,
        # As in pretrain.py: the eval curve starts where the model started.
        eval_on_start=ctx.resume_from is None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_examples),
        eval_dataset=datasets.Dataset.from_list(eval_examples),
        processing_class=tokenizer,  # saved into every checkpoint, so each one loads on its own
        peft_config=peft_config,
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    # -- answers to the eval prompts -------------------------------------------
    sampler = EvalAnswersCallback.for_stage(ctx, tokenizer, start_checkpoint=checkpoint_name(model_source),
                                            held_out=held_out, prompt_field=spec.prompt_field,
                                            messages_field=spec.messages_field, text_field=spec.text_field)

    ctx.set_resolved_config(
        {
            **args.to_dict(),
            "world_size": args.world_size,
            "model": {
                **describe_trained_model(model, model_source, parameters=parameters, trainable=trainable,
                                         lora=peft_config, quantization=spec.quantization),
                "config": model.config.to_dict(),
            },
            "tokenizer": describe_tokenizer(tokenizer, tokenizer_source),
            "data": {
                "source": f"{data_source.kind}:{data_source.value}",
                "format": data_format,
                "loss_on": "every token" if data_format == "text" or not spec.completion_only_loss
                else ("assistant turns" if assistant_only else "completions"),
                "train_examples": len(train_examples),
                "eval_examples": len(eval_examples),
            },
            "eval_prompts": sampler.describe(),
        },
        device=hardware.describe(),
    )
    return trainer, sampler


def as_chat(example: dict[str, Any]) -> dict[str, Any]:
    """A prompt/completion pair of strings as one user turn and the assistant's answer."""
    if isinstance(example["prompt"], str):
        return {"prompt": [{"role": "user", "content": example["prompt"]}],
                "completion": [{"role": "assistant", "content": example["completion"]}]}
    return example


def _conversations_for_answer_loss(
    ctx: StageContext, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], bool]:
    """Conversations keep every assistant turn in the loss when the chat
    template marks them ({% generation %}, or one TRL knows how to patch).
    Otherwise the last assistant turn becomes a completion and what precedes
    it the prompt: the loss then falls on that last answer only."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        get_training_chat_template(tokenizer)
        return examples, True
    except ValueError:
        pass
    pairs = []
    for number, example in enumerate(examples, start=1):
        messages = example["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise StageFailed(
                f"conversation {number} does not end with an assistant turn, and the chat template has no "
                "{% generation %} markers to find the assistant's tokens by; set completion_only_loss = false "
                "or use a tokenizer whose template marks them"
            )
        pairs.append({"prompt": messages[:-1], "completion": messages[-1:]})
    ctx.log("the chat template has no {% generation %} markers: the loss falls on the last assistant "
            "turn of each conversation", level="warning")
    return pairs, False
