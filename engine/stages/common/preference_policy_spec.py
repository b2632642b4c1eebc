"""What the kinds that tune a policy directly on judgements share in their specs
(dpo, kto, orpo, cpo): the policy to start from, what is trained, its length
limit and schedule, besides the judgements they read (PreferenceDataSpec).

Torch-free; the plumbing that reads these fields is preference_training.py.
Each kind adds its own objective (beta, loss_type, ...) and its own help.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.spec.fields import (
    ActivationCheckpointing,
    CheckpointSettings,
    EvalAnswerSettings,
    FromRequired,
    LoraSpec,
    Quantization,
    TrainerScheduleSettings,
)
from engine.stages.common.preference_spec import PreferenceDataSpec


class PreferencePolicySpec(PreferenceDataSpec, FromRequired, TrainerScheduleSettings, CheckpointSettings,
                           EvalAnswerSettings):
    """Fields of the stages that tune a policy on judgements without a reward
    model (dpo, kto, orpo, cpo). Not a stage kind itself."""

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "preferences": "data",
        "eval_prompts": "data",
    }
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    from_: str | None = Field(
        None, alias="from",
        description="the policy to start from: a stage (usually your sft stage), a folder or a hub id",
    )
    tokenizer: str | None = Field(None, description="tokenizer; default: the checkpoint's own")
    # What is trained.
    lora: LoraSpec | None = Field(
        None, description="a [stages.NAME.lora] table trains LoRA adapters instead of every weight",
    )
    quantization: Quantization = "none"
    activation_checkpointing: ActivationCheckpointing = "auto"
    max_length: int = Field(
        256, ge=8, le=131072, description="tokens per prompt + response; longer ones are cut at the end",
    )
    # Schedule: TrainerScheduleSettings, placed here, with these kinds' own defaults and help.
    batch_size: int = Field(16, ge=1, description="pairs per step per process")
    learning_rate: float = Field(
        1e-4, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models: "
        "use ~5e-7 (every weight) or ~5e-6 (LoRA) for models of 1B+ parameters",
    )
    # Held-out pairs; checkpoints (CheckpointSettings) and answers to fixed prompts
    # while training (EvalAnswerSettings) follow.
    eval_every: int = Field(25, ge=1, description="steps between evaluations on the held-out pairs")


class ReferencedPolicySpec(PreferencePolicySpec):
    """A kind whose loss measures the policy against a frozen reference, the
    model it starts from (dpo, kto). Not a stage kind itself."""

    from_: str | None = Field(
        None, alias="from",
        description="the policy to start from, which is also the frozen reference: a stage (usually your "
        "sft stage), a folder or a hub id",
    )
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters, and the reference is the policy with "
        "its adapters off (no second copy); without one every weight is trained against a frozen copy",
    )
    precompute_ref_log_probs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="score every example under the reference once before training instead of at every step; "
        "auto = on when training sees every example at least once (one process)",
    )
