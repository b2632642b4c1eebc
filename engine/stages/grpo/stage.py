"""GRPO: group-relative policy optimisation, through trl's GRPOTrainer.

Each step samples K completions per prompt; a completion's advantage is its
score (reward model and/or judges) minus the mean score of its prompt's
group, divided by the group's standard deviation (`scale_rewards`). The KL
to the reference is not in the reward but in the loss, per token (the k3
estimate, exp(r) - 1 - r with r = log p_ref - log p, never negative)
(DeepSeekMath, 2024). One clipped step per batch of completions; how the
per-token losses are averaged is `loss_type`.

Everything but the trainer is shared with the rloo stage (online_rl.py):
the two differ only in their trl trainer and a few settings, named here.
"""

from __future__ import annotations

# First: online_rl imports runtime, which silences tqdm before trl can load it.
from engine.stages.common import online_rl

# isort: split

from typing import Any

from trl import GRPOConfig, GRPOTrainer

from engine.stages.common.context import StageContext
from engine.stages.grpo.spec import GRPOSpec


class StageGRPOTrainer(online_rl.StepTimer, online_rl.ResumablePromptOrder, GRPOTrainer):
    """GRPOTrainer timing each step as PPO's updates are timed, and drawing
    the prompt order so that a resumed run draws what an uninterrupted one does."""


def _settings(spec: GRPOSpec) -> dict[str, Any]:
    return {"loss_type": spec.loss_type, "scale_rewards": spec.scale_rewards}


GRPO = online_rl.Flavour(kind="grpo", trainer_class=StageGRPOTrainer, config_class=GRPOConfig,
                          settings=_settings, kl_estimator="k3")


def run(ctx: StageContext) -> None:
    online_rl.run(ctx, GRPO)
