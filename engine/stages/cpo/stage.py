"""Contrastive preference optimisation and SimPO, with trl's CPOTrainer (trl.experimental).

`run(ctx)`: read the preference pairs (judgements in the store and/or
files), load the tokenizer and the policy, train, save. The loss compares
the chosen and rejected answers' log-probabilities under the policy alone:
no reference model, so no frozen copy. CPO adds `cpo_alpha` times the chosen
answers' NLL; SimPO (loss_type = "simpo", cpo_alpha = 0) averages the
log-probabilities over tokens and asks for a margin of `simpo_gamma`.

What it reports is what the dpo stage reports (engine/stages/common/
preference_training.py): TRL's `rewards/*` (here beta x the answers'
log-probability), `eval/logp_margin` on the held-out pairs from step 0, and
the eval prompts' answers.
"""

from __future__ import annotations

# First: silences tqdm, which reads its switch when it is first imported.
from engine.stages.common import setup as runtime
from engine.stages.common import trl_experimental  # noqa: F401  # quiets trl.experimental's import warning

# isort: split

from trl.experimental.cpo import CPOConfig, CPOTrainer

from engine.stages.common import quantized
from engine.stages.common.context import StageContext
from engine.stages.common.preference_training import Built, build_reference_free, train_and_save
from engine.stages.common.prologue import begin
from engine.stages.cpo.spec import CPOSpec


def run(ctx: StageContext) -> None:
    spec, hardware = begin(ctx, CPOSpec)
    quantized.require(spec, hardware)
    train_and_save(ctx, spec, build_trainer(ctx, hardware))


def build_trainer(ctx: StageContext, hardware: runtime.Runtime) -> Built:
    """Everything up to `train()`: the trainer, its eval answers and held-out margin (not attached yet)."""
    spec = ctx.spec
    assert isinstance(spec, CPOSpec)
    return build_reference_free(ctx, hardware, CPOConfig, CPOTrainer, {
        "loss_type": spec.loss_type, "beta": spec.beta, "cpo_alpha": spec.cpo_alpha,
        "simpo_gamma": spec.simpo_gamma, "alpha": spec.alpha, "label_smoothing": spec.label_smoothing,
    })
