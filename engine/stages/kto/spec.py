"""What a kto stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.stages.common.preference_policy_spec import ReferencedPolicySpec


class KTOSpec(ReferencedPolicySpec):
    """Kahneman-Tversky optimisation: the policy learns from single good/bad verdicts (trl's KTOTrainer).

    Needs no pairs: a "both bad" judgement makes both answers undesirable, a
    KTO file's thumbs count one by one, and a preference marks its best answer
    desirable and its worst undesirable. Like DPO it measures the policy
    against a frozen reference, the model it starts from.
    """

    kind: Literal["kto"] = "kto"
    beta: float = Field(
        0.1, gt=0, description="how far the policy may drift from the reference: higher stays closer",
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto", description="trl's KTO losses: kto = the KTO paper's; apo_zero_unpaired = APO-zero without pairs",
    )
    desirable_weight: float = Field(
        1.0, gt=0,
        description="weight of the good answers' loss; raise it when bad ones outnumber good ones "
        "(the KTO paper: desirable_weight x good / (undesirable_weight x bad) in [1, 4/3])",
    )
    undesirable_weight: float = Field(1.0, gt=0, description="weight of the bad answers' loss")
    batch_size: int = Field(
        16, ge=2,
        description="answers per step per process; at least 2, since KTO estimates its KL term from the "
        "other answers of the batch",
    )
