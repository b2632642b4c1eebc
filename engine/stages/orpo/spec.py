"""What an orpo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.stages.common.preference_policy_spec import PreferencePolicySpec


class ORPOSpec(PreferencePolicySpec):
    """Odds-ratio preference optimisation: SFT on the chosen answers plus an odds-ratio penalty on the
    rejected ones, no reference model (trl's ORPOTrainer).

    One pass can start from a pretrained model (no SFT stage needed) and needs
    no frozen copy, so it costs about what SFT costs.
    """

    kind: Literal["orpo"] = "orpo"
    beta: float = Field(
        0.1, gt=0,
        description="weight of the odds-ratio term against the chosen answers' NLL (the paper's lambda)",
    )
