"""What a dpo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.stages.common.preference_policy_spec import ReferencedPolicySpec

#: the losses trl 1.16's DPOConfig accepts, in its own order (tests/spec/test_dpo_losses.py compares
#: this list with DPOConfig's help, so a trl upgrade that adds or drops one fails there)
DPOLoss = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
DPO_LOSSES: tuple[str, ...] = get_args(DPOLoss)
#: the losses that read label_smoothing (robust: the share of flipped labels; exo_pair: EXO's epsilon)
SMOOTHED_LOSSES = frozenset({"robust", "exo_pair", "aot", "aot_unpaired"})


class DPOSpec(ReferencedPolicySpec):
    """Direct preference optimisation: the policy learns from chosen/rejected pairs (trl's DPOTrainer).

    No reward model: the loss raises the policy's log-probability of the
    chosen response over the rejected one, measured against a frozen
    reference, the model it starts from; `beta` says how far it may drift.
    """

    kind: Literal["dpo"] = "dpo"
    # The objective.
    beta: float = Field(
        0.1, gt=0,
        description="how far the policy may drift from the reference: higher stays closer "
        "(for ipo, the regularisation tau)",
    )
    loss_type: str | list[str] = Field(
        "sigmoid",
        description="trl's DPO loss, or an array of them added together (e.g. [\"sigmoid\", \"bco_pair\"]): "
        "sigmoid = the DPO paper's; ipo = IPO's squared loss, less prone to overfit; robust = rDPO for noisy "
        "labels (set label_smoothing); hinge, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, "
        "apo_zero, apo_down, discopop, sft, sigmoid_norm as trl names them",
    )
    loss_weights: list[float] | None = Field(
        None, description="one weight per loss of a loss_type array; default: 1 each",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5,
        description="for robust: the share of preference labels believed flipped (0.1 is typical); for exo_pair "
        "its epsilon (1e-3, required above 0); aot/aot_unpaired also read it; other losses refuse it",
    )
    sft_weight: float = Field(
        0.0, ge=0,
        description="adds this times the chosen responses' mean token NLL to the loss (RPO): keeps them likely, "
        "against DPO's habit of lowering chosen and rejected alike; 0 = plain DPO",
    )

    @field_validator("loss_type")
    @classmethod
    def _trl_losses(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise PydanticCustomError("no_loss", "expected a loss or a non-empty array of losses")
        unknown = [name for name in names if name not in DPO_LOSSES]
        if unknown:
            raise PydanticCustomError(
                "dpo_loss", "{unknown} is not one of trl's DPO losses; expected one of {valid}",
                {"unknown": ", ".join(repr(n) for n in unknown), "valid": ", ".join(DPO_LOSSES)},
            )
        if len(set(names)) != len(names):
            raise PydanticCustomError("repeated_loss", "a loss is named twice; expected each once")
        return value

    @model_validator(mode="after")
    def _loss_settings_fit(self) -> DPOSpec:
        losses = self.losses
        if self.loss_weights is not None and len(self.loss_weights) != len(losses):
            raise PydanticCustomError(
                "loss_weights", "loss_weights has {weights} entries for {losses} losses; expected one per loss",
                {"weights": len(self.loss_weights), "losses": len(losses)},
            )
        if self.sft_weight > 0 and "sft" in losses:
            raise PydanticCustomError(
                "sft_twice", "sft_weight adds the sft loss, which loss_type already names; set one of them",
            )
        if "exo_pair" in losses and self.label_smoothing == 0:
            raise PydanticCustomError(
                "exo_smoothing", "exo_pair needs label_smoothing above 0 (its epsilon; the EXO paper uses 1e-3)",
            )
        if self.label_smoothing > 0 and not SMOOTHED_LOSSES & set(losses):
            raise PydanticCustomError(
                "unused_smoothing", "label_smoothing is read only by {smoothed}; loss_type {losses} would ignore it",
                {"smoothed": ", ".join(sorted(SMOOTHED_LOSSES)), "losses": ", ".join(losses)},
            )
        return self

    @property
    def losses(self) -> list[str]:
        """loss_type as a list (one name is a list of one)."""
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    def trl_loss(self) -> tuple[list[str], list[float] | None]:
        """(loss_type, loss_weights) for DPOConfig: sft_weight appends trl's sft loss (RPO)."""
        losses, weights = self.losses, self.loss_weights
        if self.sft_weight > 0:
            return [*losses, "sft"], [*(weights or [1.0] * len(losses)), self.sft_weight]
        return losses, weights
