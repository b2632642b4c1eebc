"""What the RLOO and GRPO stages share in their specs (trl's online trainers).

Torch-free; the plumbing that runs them is online_rl.py.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.spec.fields import (
    ActivationCheckpointing,
    EvalAnswerSettings,
    FromRequired,
    FrozenQuantization,
    KeepCheckpoints,
    LoraSpec,
    MaxGradNorm,
    Quantization,
    SampleEvery,
    SaveEvery,
    StageSpec,
    WarmupSteps,
    WeightDecay,
    trained_reward_model,
)

#: how a spec names a judge: the built-in rule-based one, or a Python callable
_JUDGE_NAME = re.compile(r"demo|[A-Za-z_][\w.]*:[A-Za-z_]\w*", re.ASCII)


class OnlineRLSpec(StageSpec, FromRequired, EvalAnswerSettings):
    """Fields the RLOO and GRPO stages share (trl's online trainers): each step
    samples K completions per prompt, scores them with a reward model and/or
    judges, and moves the policy towards the completions that beat the others
    of their prompt, on a KL leash to where it started. Not a stage kind itself."""

    demo_defaults: ClassVar[dict[str, str]] = {"prompts": "builtin:demo-instructions"}
    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "reward_model": "model",
        "tokenizer": "tokenizer",
        "prompts": "data",
        "eval_prompts": "data",
    }
    # runtime.training_kwargs reads these: the metrics are logged every step (so
    # each step's figures line up with PPO's per-update ones) and there is no
    # held-out loss to evaluate.
    log_every: ClassVar[int] = 1
    eval_every: ClassVar[int] = 1

    # The models and the rewards.
    from_: str | None = Field(
        None, alias="from",
        description="the policy to start from, which is also the frozen reference: a stage (usually your "
        "sft stage), a folder or a hub id",
    )
    tokenizer: str | None = Field(None, description="the policy's tokenizer; default: the checkpoint's own")
    reward_model: str | None = Field(
        None,
        description="a reward model scoring each completion: a reward stage, or a folder or hub id holding a "
        "sequence-classification model with one output; it may use another tokenizer than the policy",
    )
    judges: list[str] = Field(
        default_factory=list,
        description="judges scoring each prompt's completions, added to the reward model's score: `demo` "
        "(the built-in rule-based judge) or Python callables `module:function(prompt, responses) -> scores`; "
        "one name or an array",
    )
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters on the policy, and the reference is the "
        "policy with its adapters off (no second copy); without one every weight is trained",
    )
    quantization: Quantization = "none"
    frozen_quantization: FrozenQuantization = "none"
    activation_checkpointing: ActivationCheckpointing = "auto"
    # The prompts it practises on.
    prompts: str | None = Field(
        None,
        description="prompts to sample completions for: builtin, a file, a datasets folder or a hub id. "
        "Required, unless the policy is a built-in demo model (then the demo task's train split)",
    )
    prompt_field: str = Field("prompt", description="column holding the prompt")
    max_prompts: int | None = Field(None, ge=1, description="use at most this many distinct prompts (the first ones)")
    # Schedule: one generation batch per optimizer step.
    max_steps: int = Field(100, ge=1, description="optimizer steps, each on freshly sampled completions")
    prompts_per_step: int = Field(8, ge=1, description="prompts per optimizer step per process")
    num_generations: int = Field(
        4, ge=2, le=256, description="K, completions sampled per prompt; each is compared with the other K - 1",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, validate_default=True,
        description="micro-batches a step's prompts_per_step x num_generations completions are split into "
        "(less memory, same step)",
    )
    learning_rate: float = Field(
        1e-4, gt=0,
        description="AdamW learning rate of the policy; suits the tiny built-in models: "
        "use ~1e-6 (every weight) or ~1e-5 (LoRA) for models of 1B+ parameters",
    )
    weight_decay: WeightDecay = 0.0
    warmup_steps: WarmupSteps = 0
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"] = Field(
        "constant", description="learning-rate schedule after warm-up"
    )
    max_grad_norm: MaxGradNorm = 1.0
    # Sampling and the objective.
    max_new_tokens: int = Field(32, ge=1, le=32768, description="longest completion, in tokens")
    temperature: float = Field(
        1.0, gt=0, le=100,
        description="sampling temperature (these methods need sampling: greedy is not allowed); the "
        "policy's probabilities are computed at the same temperature",
    )
    beta: float = Field(
        0.05, ge=0, description="KL coefficient: how far the policy may drift from the reference (0 = no leash)",
    )
    clip_range: float = Field(
        0.2, gt=0, description="the ratio clip: a step moves a completion's probability at most 1 +- this",
    )
    # Checkpoints and what people see (the eval prompts' settings, EvalAnswerSettings, follow).
    save_every: SaveEvery = 20
    keep_checkpoints: KeepCheckpoints = 2
    sample_every: SampleEvery = 10
    samples_per_step: int = Field(
        4, ge=0,
        description="completions of the step stored every sample_every steps, with their scores (0 = none)",
    )

    @field_validator("from_")
    @classmethod
    def _required(cls, value: str | None) -> str:
        if value is None:
            raise PydanticCustomError("missing", "required")
        if value.startswith("builtin:"):
            # trl reloads the reference from the policy's folder or hub id; a preset has neither.
            raise PydanticCustomError(
                "policy", "expected a trained policy (a stage, a folder or a hub id), not a built-in preset",
            )
        return value

    @field_validator("reward_model")
    @classmethod
    def _trained_reward_model(cls, value: str | None) -> str | None:
        return None if value is None else trained_reward_model(value)

    @field_validator("judges", mode="before")
    @classmethod
    def _one_judge_or_an_array(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # judges = "demo" names one

    @field_validator("judges")
    @classmethod
    def _judges_are_named_right(cls, value: list[str]) -> list[str]:
        # Only the spelling: importing the user's module is the worker's job, not the CLI's.
        for number, name in enumerate(value, 1):
            if not _JUDGE_NAME.fullmatch(name):
                raise PydanticCustomError(
                    "judge_name", "item {number} of the array, {name}, is neither `demo` nor a Python callable "
                    "written module:function", {"number": number, "name": repr(name)},
                )
            if name in value[:number - 1]:
                raise PydanticCustomError("judge_name", "names the judge {name} twice", {"name": repr(name)})
        return value

    @field_validator("gradient_accumulation_steps")
    @classmethod
    def _micro_batches_split_evenly(cls, value: int, info: ValidationInfo) -> int:
        prompts, k = info.data.get("prompts_per_step"), info.data.get("num_generations")
        if isinstance(prompts, int) and isinstance(k, int) and (prompts * k) % value:
            raise PydanticCustomError(
                "micro_batches", "{value} does not divide a step's {completions} completions "
                "(prompts_per_step x num_generations)", {"value": value, "completions": prompts * k},
            )
        return value

    @model_validator(mode="after")
    def _something_scores(self) -> OnlineRLSpec:
        if self.reward_model is None and not self.judges:
            raise PydanticCustomError(
                "no_reward", "name what scores the completions: `reward_model` and/or `judges`",
            )
        return self

    @property
    def batch_size(self) -> int:
        """Completions per micro-batch per process (trl's per_device_train_batch_size)."""
        return self.prompts_per_step * self.num_generations // self.gradient_accumulation_steps
