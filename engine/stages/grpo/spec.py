"""What a grpo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.stages.common.online_rl_spec import OnlineRLSpec


class GRPOSpec(OnlineRLSpec):
    """GRPO: group-relative policy optimisation on K completions per prompt (trl's GRPOTrainer).

    Each completion's score is compared with the mean (and scaled by the
    standard deviation) of its prompt's group; the KL to the reference is a
    penalty in the loss, per token (DeepSeekMath, 2024).
    """

    kind: Literal["grpo"] = "grpo"
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo",
        description="how per-token losses are averaged: dapo = over every token of the step (trl's default), "
        "grpo = per completion then over completions, dr_grpo = over max_new_tokens per completion, "
        "bnpo = over the tokens of each micro-batch",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="divide advantages by the standard deviation of the prompt's group, of the whole batch, "
        "or not at all (Dr. GRPO)",
    )
