"""What an orpo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.stages.common.preference_policy_spec import PreferencePolicySpec


class ORPOSpec(PreferencePolicySpec):
    """Odds-ratio preference optimisation: SFT plus a preference penalty, no reference (trl's ORPOTrainer).

    The loss is the chosen answers' NLL plus `beta` times a penalty on the
    odds of the rejected answer against the chosen one. One pass can start
    from a pretrained model (no SFT stage needed) and needs no frozen copy,
    so it costs about what SFT costs.
    """

    kind: Literal["orpo"] = "orpo"
    beta: float = Field(
        0.1, gt=0,
        description="weight of the odds-ratio term against the chosen answers' NLL (the paper's lambda)",
    )
