"""What an sft stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.spec.fields import (
    ActivationCheckpointing,
    CheckpointSettings,
    EvalAnswerSettings,
    LoraSpec,
    Quantization,
    StageSpec,
    TrainerScheduleSettings,
)


class SFTSpec(StageSpec, TrainerScheduleSettings, CheckpointSettings, EvalAnswerSettings):
    """Supervised fine-tuning on instructions and their answers (trl's SFTTrainer)."""

    #: a user's model is never fine-tuned on the demo task's instructions by default
    demo_defaults: ClassVar[dict[str, str]] = {"data": "builtin:demo-instructions"}
    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "data": "data",
        "eval_prompts": "data",
    }

    kind: Literal["sft"] = "sft"
    from_: str = Field(
        "builtin:llama-4m", alias="from",
        description="the model to fine-tune: a stage (usually your pretrain stage), a folder or a hub id; "
        "a built-in preset starts from a random init",
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer; default: the checkpoint's own, or builtin:bpe-4k for a preset",
    )
    # What it learns from.
    data: str | None = Field(
        None,
        description="instruction data: builtin, a JSONL/parquet/CSV file, a datasets folder or a hub id; "
        "required, unless the model is a built-in demo model (then the demo task's instructions)",
    )
    format: Literal["auto", "prompt_completion", "messages", "alpaca", "text"] = Field(
        "auto",
        description="auto = from the columns: prompt + completion, messages (chat turns), "
        "instruction + input + output (alpaca), or text (loss on every token)",
    )
    prompt_field: str = Field("prompt", description="column holding the prompt (prompt_completion format)")
    completion_field: str = Field(
        "completion", description="column holding the answer (prompt_completion format)"
    )
    messages_field: str = Field("messages", description="column holding the chat turns (messages format)")
    text_field: str = Field("text", description="column holding the text (text format)")
    max_examples: int | None = Field(None, ge=1, description="use at most this many examples")
    max_length: int = Field(
        512, ge=8, le=131072, description="tokens per example; longer ones are cut at the end"
    )
    completion_only_loss: bool = Field(
        True,
        description="learn the answers only: the completion, or the assistant turns of a conversation; "
        "false = every token (text data always learns every token)",
    )
    # What is trained.
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters (r, alpha, dropout, target_modules); "
        "without one every weight is fine-tuned",
    )
    quantization: Quantization = "none"
    activation_checkpointing: ActivationCheckpointing = "auto"
    # Schedule: TrainerScheduleSettings, placed here, with this kind's own defaults and help.
    max_steps: int = Field(400, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="examples per step per process")
    learning_rate: float = Field(
        1e-3, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models: "
        "use ~2e-5 (every weight) or ~2e-4 (LoRA) for models of 100M+ parameters",
    )
    # Held-out loss; checkpoints (CheckpointSettings) and answers to fixed prompts
    # while training, stored as samples (EvalAnswerSettings), follow.
    eval_fraction: float = Field(
        0.05, gt=0, lt=1, description="share of distinct prompts held out for the eval loss"
    )
    eval_every: int = Field(50, ge=1, description="steps between held-out loss evaluations")
    eval_batches: int = Field(8, ge=1, description="batches per evaluation (caps its cost)")
