"""What a ppo stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

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
    Quantization,
    StageSpec,
    WeightDecay,
    trained_reward_model,
)


class PPOSpec(StageSpec, FromRequired, EvalAnswerSettings):
    """RLHF with PPO: the policy learns to please a reward model, on a KL leash to where it started.

    Each update samples a response to `rollout_batch_size` prompts, scores
    each with the reward model, subtracts beta times the per-token KL to the
    frozen reference (the starting policy), and takes `ppo_epochs` passes of
    clipped PPO steps over minibatches of those responses (InstructGPT's
    recipe; our own implementation, engine/stages/ppo/stage.py).
    """

    demo_defaults: ClassVar[dict[str, str]] = {"prompts": "builtin:demo-instructions"}
    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "reward_model": "model",
        "tokenizer": "tokenizer",
        "prompts": "data",
        "ptx_data": "data",
        "eval_prompts": "data",
    }

    kind: Literal["ppo"] = "ppo"
    # The models.
    from_: str | None = Field(
        None, alias="from",
        description="the policy to start from, which is also the frozen reference: a stage (usually your "
        "sft stage), a folder or a hub id",
    )
    reward_model: str | None = Field(
        None,
        description="the reward model: a reward stage, or a folder or hub id holding a sequence-classification "
        "model with one output; it may use another tokenizer than the policy",
    )
    value_from: Literal["reward", "policy"] = Field(
        "reward",
        description="what the value network starts from: the reward model (as InstructGPT; it must share the "
        "policy's tokenizer) or the policy with a new head",
    )
    tokenizer: str | None = Field(None, description="the policy's tokenizer; default: the checkpoint's own")
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters on the policy, and the reference is the "
        "policy with its adapters off (no second copy); without one every weight is trained",
    )
    quantization: Quantization = Field(
        "none",
        description="QLoRA: the policy's frozen base in 4 or 8 bits, and the value network's too (its body then "
        "trains LoRA adapters of the same lora table, and its score head in full); needs lora, a CUDA GPU and "
        "bitsandbytes",
    )
    frozen_quantization: FrozenQuantization = "none"
    activation_checkpointing: ActivationCheckpointing = "auto"
    # The prompts it practises on.
    prompts: str | None = Field(
        None,
        description="prompts to sample responses to: builtin, a file, a datasets folder or a hub id. "
        "Required, unless the policy is a built-in demo model (then the demo task's train split)",
    )
    prompt_field: str = Field("prompt", description="column holding the prompt")
    max_prompts: int | None = Field(None, ge=1, description="use at most this many distinct prompts (the first ones)")
    # Schedule.
    updates: int = Field(100, ge=1, description="PPO updates: each one samples, scores and optimises on a new batch")
    rollout_batch_size: int = Field(32, ge=1, description="prompts (one response each) per update per process")
    minibatch_size: int = Field(
        8, ge=1, validate_default=True, description="responses per optimizer step per process",
    )
    ppo_epochs: int = Field(4, ge=1, description="passes over each update's responses")
    learning_rate: float = Field(
        1e-4, gt=0,
        description="AdamW learning rate of the policy (constant); suits the tiny built-in models: "
        "use ~1e-6 (every weight) or ~1e-5 (LoRA) for models of 1B+ parameters",
    )
    value_learning_rate: float | None = Field(
        None, gt=0, description="AdamW learning rate of the value network; default: learning_rate",
    )
    weight_decay: WeightDecay = 0.0
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping, for the policy and the value network each")
    # Sampling the responses.
    max_new_tokens: int = Field(32, ge=1, le=32768, description="longest response, in tokens")
    temperature: float = Field(
        1.0, gt=0, le=100,
        description="sampling temperature (PPO needs sampling: greedy is not allowed); the policy's "
        "probabilities are computed at the same temperature",
    )
    top_p: float = Field(
        1.0, gt=0, le=1,
        description="nucleus sampling; below 1 the responses come from a truncated policy whose "
        "probabilities PPO does not see, so keep 1 unless you know why",
    )
    # The reward.
    beta: float = Field(0.05, ge=0, description="KL coefficient: reward = score - beta x KL(policy || reference)")
    adaptive_kl: bool = Field(
        False, description="adjust beta to keep the KL near target_kl (Ziegler et al.'s proportional controller)",
    )
    target_kl: float = Field(6.0, gt=0, description="adaptive_kl: the KL per response to aim for, in nats")
    horizon: int = Field(10000, ge=1, description="adaptive_kl: responses over which beta may change by e^0.2 at most")
    kl_estimator: Literal["k1", "k3"] = Field(
        "k1",
        description="per-token KL in the reward: k1 = log p - log p_ref (sums to the log-ratio), "
        "k3 = exp(r) - 1 - r (never negative, lower variance)",
    )
    no_eos_penalty: float = Field(
        1.0, ge=0,
        description="subtracted from the score of a response that does not end within max_new_tokens "
        "(0 = no penalty)",
    )
    # Advantages and losses.
    gamma: float = Field(1.0, ge=0, le=1, description="discount of later rewards")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda: 0 = one-step TD, 1 = Monte Carlo returns")
    whiten_advantages: bool = Field(True, description="scale advantages to zero mean and unit variance per update")
    clip_range: float = Field(0.2, gt=0, description="PPO's ratio clip: the policy moves at most 1 +- this per update")
    clip_range_value: float = Field(0.2, gt=0, description="value clip: values move at most this far per update")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    # PPO-ptx (InstructGPT): a language-modelling loss mixed in.
    ptx_data: str | None = Field(
        None,
        description="PPO-ptx data: text or instructions (builtin, a file, a datasets folder or a hub id); "
        "every token is learned",
    )
    ptx_coef: float = Field(
        0.0, ge=0,
        description="PPO-ptx: weight of a language-modelling loss on ptx_data, so the policy keeps what it "
        "knew (InstructGPT); 0 = off",
    )
    ptx_max_length: int = Field(256, ge=8, le=131072, description="PPO-ptx: tokens per example")
    # Checkpoints and what people see (the eval prompts' settings, EvalAnswerSettings, follow).
    save_every: int = Field(20, ge=1, description="updates between resumable checkpoints")
    keep_checkpoints: KeepCheckpoints = 2
    sample_every: int = Field(
        10, ge=1,
        description="updates between storing rollout responses with their reward and KL, and answering "
        "the eval prompts (also before the first update and after the last)",
    )
    samples_per_update: int = Field(4, ge=0, description="rollout responses stored each time (0 = none)")

    @model_validator(mode="before")
    @classmethod
    def _reward_model_is_present(cls, data: object) -> object:
        # Required like `from`, with a None default for the same reason (FromRequired).
        if isinstance(data, dict) and "reward_model" not in data:
            data = {**data, "reward_model": None}
        return data

    @field_validator("reward_model")
    @classmethod
    def _trained_reward_model(cls, value: str | None) -> str:
        if value is None:
            raise PydanticCustomError("missing", "required")
        return trained_reward_model(value)

    @field_validator("minibatch_size")
    @classmethod
    def _minibatch_fits(cls, value: int, info: ValidationInfo) -> int:
        rollout = info.data.get("rollout_batch_size")
        if isinstance(rollout, int) and value > rollout:
            raise PydanticCustomError(
                "minibatch", "more than the {rollout} responses of an update (rollout_batch_size)",
                {"rollout": rollout},
            )
        return value

    @field_validator("ptx_coef")
    @classmethod
    def _ptx_needs_data(cls, value: float, info: ValidationInfo) -> float:
        if value > 0 and "ptx_data" in info.data and info.data["ptx_data"] is None:
            raise PydanticCustomError("ptx_data", "needs ptx_data, the data PPO-ptx learns from")
        return value
