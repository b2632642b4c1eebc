"""What a reward stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.spec.fields import (
    ActivationCheckpointing,
    CheckpointSettings,
    FromRequired,
    LoraSpec,
    Quantization,
    TrainerScheduleSettings,
)
from engine.stages.common.preference_spec import PreferenceDataSpec


class RewardSpec(PreferenceDataSpec, FromRequired, TrainerScheduleSettings, CheckpointSettings):
    """A reward model: a scalar score per response, learned from chosen/rejected pairs (trl's RewardTrainer).

    The model it starts from (usually your SFT stage) gets a one-output head
    in place of its language-model head; the loss pushes the chosen
    response's score above the rejected one's (Bradley-Terry). All pairs of a
    prompt go into one batch, as InstructGPT trains its C(K,2) comparisons.
    """

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "preferences": "data",
    }
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    kind: Literal["reward"] = "reward"
    from_: str | None = Field(
        None, alias="from",
        description="the model to start from: a stage (usually your sft stage), a folder or a hub id; "
        "a built-in preset starts from a random init",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer; default: the checkpoint's own, or builtin:bpe-4k for a preset",
    )
    # What is trained.
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters (and the score head); "
        "without one every weight is trained",
    )
    quantization: Quantization = "none"
    activation_checkpointing: ActivationCheckpointing = "auto"
    max_length: int = Field(
        512, ge=8, le=131072,
        description="tokens per prompt + response; pairs with a longer side are left out (and counted in the log)",
    )
    group_by_prompt: bool = Field(
        True,
        description="all pairs of a prompt in one batch (InstructGPT), so a response is not fitted again and "
        "again across steps; false = pairs shuffled one by one",
    )
    # Schedule: TrainerScheduleSettings, placed here, with this kind's own defaults and help.
    batch_size: int = Field(
        16, ge=1,
        description="pairs per step per process (with group_by_prompt, whole prompts: about this many)",
    )
    learning_rate: float = Field(
        1e-4, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models (higher ones forget what SFT "
        "taught, measured on the demo task): use ~1e-5 (every weight) or ~1e-4 (LoRA) for models of 100M+ parameters",
    )
    # Held-out pairs; checkpoints (CheckpointSettings) follow.
    eval_every: int = Field(25, ge=1, description="steps between evaluations on the held-out pairs")
