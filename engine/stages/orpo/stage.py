"""Odds-ratio preference optimisation, with trl's ORPOTrainer (trl.experimental).

`run(ctx)`: read the preference pairs (judgements in the store and/or
files), load the tokenizer and the policy, train, save. ORPO's loss is the
chosen answers' NLL (SFT) plus `beta` times a penalty on the odds of the
rejected answer against the chosen one: no reward model and no reference
model, so it needs no frozen copy and can start from a model that was never
supervised-tuned.

What it reports is what the dpo stage reports (engine/stages/common/
preference_training.py): TRL's `rewards/*` (here beta x the answers' mean
log-probability), `eval/logp_margin` on the held-out pairs from step 0, and
the eval prompts' answers; plus ORPO's `nll_loss` and `log_odds_ratio`.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime
from engine.stages.common import trl_experimental  # noqa: F401  # quiets trl.experimental's import warning

# isort: split

from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from engine.stages.common import quantized
from engine.stages.common.context import StageContext
from engine.stages.common.preference_training import Built, build_reference_free, train_and_save
from engine.stages.common.prologue import begin
from engine.stages.orpo.spec import ORPOSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, ORPOSpec)
    quantized.require(spec, hardware)
    train_and_save(ctx, spec, build_trainer(ctx, hardware))


def build_trainer(ctx: StageContext, hardware: runtime.Runtime) -> Built:
    """Everything up to `train()`: the trainer, its eval answers and held-out margin (not attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, ORPOSpec)
    return build_reference_free(ctx, hardware, ORPOConfig, ORPOTrainer, {"beta": spec.beta})
