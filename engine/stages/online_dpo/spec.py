"""What an online_dpo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.spec.fields import raise_pass_through_problems
from engine.spec.pass_through import check_trainer
from engine.stages.common.online_rl_spec import OnlineRLSpec


class OnlineDPOSpec(OnlineRLSpec):
    """Online DPO: the policy's own two answers per prompt, ranked on the fly by a reward model or judges.

    Each step samples two completions per prompt; whichever the reward
    model and/or judges score higher is `chosen`, the other `rejected`, and
    the policy takes one DPO step on those fresh pairs against a frozen
    reference, the model it starts from (Guo et al., 2024; trl's
    OnlineDPOTrainer). No preference data: the pairs are made as it trains.
    """

    kind: Literal["online_dpo"] = "online_dpo"
    # Two completions per prompt is what trl's trainer samples; the field stays so the
    # shared online fields (and their checks) read the same, but it cannot change.
    num_generations: Literal[2] = Field(
        2, description="completions sampled per prompt: always 2, the pair the scorer orders (chosen, rejected)",
    )
    beta: float = Field(
        0.1, gt=0,
        description="DPO's beta: how far the policy may drift from the reference, higher stays closer "
        "(for ipo, the regularisation tau)",
    )
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid = the DPO paper's loss; ipo = IPO's squared loss (the two trl's online "
        "DPO has)",
    )
    missing_eos_penalty: float = Field(
        0.0, ge=0,
        description="subtracted from the score of a completion that did not end within max_new_tokens, "
        "so rambling loses its pair (0 = none)",
    )

    @field_validator("gradient_accumulation_steps")
    @classmethod
    def _micro_batches_split_evenly(cls, value: int, info: ValidationInfo) -> int:
        # trl's online DPO batches prompts (it samples both completions of each itself).
        prompts = info.data.get("prompts_per_step")
        if isinstance(prompts, int) and prompts % value:
            raise PydanticCustomError(
                "micro_batches", "{value} does not divide a step's {prompts} prompts (prompts_per_step)",
                {"value": value, "prompts": prompts},
            )
        return value

    @field_validator("trainer")
    @classmethod
    def _trainer_settings(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        # StageSpec's check, but clip_range (refused below) does not count as this spec's own:
        # a [trainer] epsilon is simply not an OnlineDPOConfig setting, not one to set as clip_range.
        if not value:
            return value
        own = [f.alias or name for name, f in cls.model_fields.items() if name not in ("trainer", "clip_range")]
        raise_pass_through_problems(check_trainer("online_dpo", value, own))
        return value

    @model_validator(mode="after")
    def _no_ratio_clip(self) -> OnlineDPOSpec:
        if "clip_range" in self.model_fields_set:
            raise PydanticCustomError(
                "clip_range", "online DPO has no probability ratio to clip (its loss is DPO's): remove clip_range",
            )
        return self

    @property
    def batch_size(self) -> int:
        """Prompts per micro-batch per process (trl's per_device_train_batch_size; two completions each)."""
        return self.prompts_per_step // self.gradient_accumulation_steps
