"""What an rloo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.stages.common.online_rl_spec import OnlineRLSpec


class RLOOSpec(OnlineRLSpec):
    """RLOO: REINFORCE with a leave-one-out baseline, on K completions per prompt (trl's RLOOTrainer).

    Each completion's reward (score minus beta times its KL to the reference)
    is compared with the mean of the other K - 1 completions of its prompt:
    no value network, one optimizer step per batch of completions
    (Ahmadian et al., 2024).
    """

    kind: Literal["rloo"] = "rloo"
    normalize_advantages: bool = Field(
        False, description="scale each step's advantages to zero mean and unit variance",
    )
