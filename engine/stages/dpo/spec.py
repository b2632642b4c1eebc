"""What a dpo stage accepts (torch-free; its run is stage.py)."""

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


class DPOSpec(PreferenceDataSpec, FromRequired, TrainerScheduleSettings, CheckpointSettings, EvalAnswerSettings):
    """Direct preference optimisation: the policy learns from chosen/rejected pairs (trl's DPOTrainer).

    No reward model: the loss raises the policy's log-probability of the
    chosen response over the rejected one, measured against a frozen
    reference, the model it starts from; `beta` says how far it may drift.
    """

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "preferences": "data",
        "eval_prompts": "data",
    }
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    kind: Literal["dpo"] = "dpo"
    from_: str | None = Field(
        None, alias="from",
        description="the policy to start from, which is also the frozen reference: a stage (usually your "
        "sft stage), a folder or a hub id",
    )
    tokenizer: str | None = Field(None, description="tokenizer; default: the checkpoint's own")
    # The objective.
    beta: float = Field(
        0.1, gt=0,
        description="how far the policy may drift from the reference: higher stays closer "
        "(for ipo, the regularisation tau)",
    )
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid = the DPO paper's loss; ipo = IPO's squared loss, less prone to overfit",
    )
    sft_weight: float = Field(
        0.0, ge=0,
        description="adds this times the chosen responses' mean token NLL to the loss (RPO): keeps them likely, "
        "against DPO's habit of lowering chosen and rejected alike; 0 = plain DPO",
    )
    # What is trained.
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters, and the reference is the policy with "
        "its adapters off (no second copy); without one every weight is trained against a frozen copy",
    )
    quantization: Quantization = "none"
    precompute_ref_log_probs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="score every pair under the reference once before training instead of at every step; "
        "auto = on when training sees every pair at least once (one process)",
    )
    activation_checkpointing: ActivationCheckpointing = "auto"
    max_length: int = Field(
        256, ge=8, le=131072, description="tokens per prompt + response; longer ones are cut at the end",
    )
    # Schedule: TrainerScheduleSettings, placed here, with this kind's own defaults and help.
    batch_size: int = Field(16, ge=1, description="pairs per step per process")
    learning_rate: float = Field(
        1e-4, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models: "
        "use ~5e-7 (every weight) or ~5e-6 (LoRA) for models of 1B+ parameters",
    )
    # Held-out pairs; checkpoints (CheckpointSettings) and answers to fixed prompts
    # while training (EvalAnswerSettings) follow.
    eval_every: int = Field(25, ge=1, description="steps between evaluations on the held-out pairs")
