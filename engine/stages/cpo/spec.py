"""What a cpo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from engine.stages.common.preference_policy_spec import PreferencePolicySpec


class CPOSpec(PreferencePolicySpec):
    """Contrastive preference optimisation and SimPO: no reference model (trl's CPOTrainer).

    The kind is named after trl's trainer, which holds both: SimPO is CPO's
    trainer with loss_type = "simpo" (a length-normalised reward with a target
    margin, simpo_gamma) and cpo_alpha = 0 (no NLL term on the chosen answers).
    """

    kind: Literal["cpo"] = "cpo"
    # CPOConfig also lists "alphapo", which its trainer refuses: AlphaPO is `alpha` with any loss.
    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo"] = Field(
        "sigmoid",
        description="trl's CPO losses: sigmoid = CPO's; simpo = SimPO's (set cpo_alpha = 0 for plain SimPO); "
        "hinge; ipo",
    )
    beta: float = Field(
        0.1, gt=0, description="the reward's scale (for ipo, its tau; the SimPO paper uses 2 to 10)",
    )
    cpo_alpha: float = Field(
        1.0, ge=0, description="weight of the NLL term on the chosen answers; 0 = plain SimPO",
    )
    simpo_gamma: float = Field(
        0.5, ge=0, description="SimPO's target reward margin (loss_type = simpo only)",
    )
    alpha: float = Field(
        0.0, description="AlphaPO: the reward's shape, (1 - p^-alpha) / alpha; 0 = log-probability rewards",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="the share of labels believed flipped (sigmoid and simpo losses)",
    )

    @model_validator(mode="after")
    def _settings_fit_the_loss(self) -> CPOSpec:
        if self.simpo_gamma != 0.5 and self.loss_type != "simpo":
            raise PydanticCustomError("simpo_gamma", "simpo_gamma is read only by loss_type = \"simpo\"")
        if self.label_smoothing > 0 and self.loss_type not in ("sigmoid", "simpo"):
            raise PydanticCustomError(
                "label_smoothing", "label_smoothing is read only by the sigmoid and simpo losses, not {loss}",
                {"loss": self.loss_type},
            )
        return self
