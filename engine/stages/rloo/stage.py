"""RLOO: REINFORCE with a leave-one-out baseline, through trl's RLOOTrainer.

Each step samples K completions per prompt; a completion's reward is its
score (reward model and/or judges) minus beta times its KL to the reference,
summed over its tokens (the k1 estimate, log p - log p_ref); its advantage
is that reward minus the mean reward of the other K - 1 completions of the
same prompt. No value network: the other completions are the baseline
(Ahmadian et al., 2024). One clipped step per batch of completions.

Everything but the trainer is shared with the grpo stage (online_rl.py):
the two differ only in their trl trainer and a few settings, named here.
"""

from __future__ import annotations

# First: online_rl imports runtime, which silences tqdm before trl can load it.
from engine.stages.common import online_rl

# isort: split

from typing import Any

from trl import RLOOConfig, RLOOTrainer

from engine.stages.common.context import StageContext
from engine.stages.rloo.spec import RLOOSpec


class StageRLOOTrainer(online_rl.StepTimer, online_rl.ResumablePromptOrder, RLOOTrainer):
    """RLOOTrainer timing each step as PPO's updates are timed, and drawing
    the prompt order so that a resumed run draws what an uninterrupted one does."""


def _settings(spec: RLOOSpec) -> dict[str, Any]:
    return {"normalize_advantages": spec.normalize_advantages}


RLOO = online_rl.Flavour(kind="rloo", trainer_class=StageRLOOTrainer, config_class=RLOOConfig,
                          settings=_settings, kl_estimator="k1")


def run(ctx: StageContext) -> None:
    online_rl.run(ctx, RLOO)
