"""What each stage kind accepts: torch-free pydantic models of the TOML tables.

Spec = our description (PretrainSpec); Config = the library object a stage
builds from it (transformers.TrainingArguments). Field descriptions are the
help text `rlhf init` and the console's launch form show.

Reference fields (`from`, `tokenizer`, `data`) are written by people as a
stage name, `builtin:NAME`, a local path or a hub id; the pipeline loader
rewrites them to one canonical form: `stage:NAME`, `builtin:NAME`,
`path:/absolute/path` or `hub:org/name` (see engine/spec/refs.py).
"""

from __future__ import annotations

import importlib
from datetime import datetime
import os
import re
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError


# Settings every trainer-backed stage shares, defined once so that they read
# (and validate) the same everywhere; a stage gives each its own default.
GradientAccumulationSteps = Annotated[int, Field(
    ge=1, description="micro-batches per optimizer step (effective batch = batch_size x this x processes)",
)]
WeightDecay = Annotated[float, Field(ge=0, description="AdamW weight decay")]
WarmupSteps = Annotated[int, Field(ge=0, description="steps of linear warm-up from 0 to learning_rate")]
LrScheduler = Annotated[
    Literal["cosine", "linear", "constant", "constant_with_warmup"],
    Field(description="learning-rate schedule after warm-up"),
]
MaxGradNorm = Annotated[float, Field(gt=0, description="gradient clipping")]
SaveEvery = Annotated[int, Field(ge=1, description="steps between resumable checkpoints")]
KeepCheckpoints = Annotated[int, Field(ge=1, description="resumable checkpoints kept on disk")]
LogEvery = Annotated[int, Field(ge=1, description="steps between logged train metrics")]
ActivationCheckpointing = Annotated[Literal["auto", "on", "off"], Field(
    description="recompute activations in the backward pass to save memory; "
    "auto = on a GPU for models of 100M+ parameters, off on the CPU",
)]


class StageSpec(BaseModel):
    """Fields every stage kind has."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True,
        frozen=True, allow_inf_nan=False,  # TOML accepts inf and nan; no setting wants them
    )

    #: reference fields -> the built-in catalogue section they may name
    reference_fields: ClassVar[dict[str, str]] = {}
    #: reference fields whose value may also be an array of references (`from = ["a", "b"]`)
    reference_list_fields: ClassVar[frozenset[str]] = frozenset()

    kind: str
    processes: int = Field(
        1, ge=1, le=64,
        description="worker processes; more than 1 launches the stage through `accelerate launch`",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = the GPUs if any are visible, else the CPU"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 autocast on GPUs that support it, else fp32"
    )
    seed: int = Field(0, description="seed for initialisation, data order and sampling")

    #: whether the stage waits for a device slot (a GPU, or the machine's CPU slot)
    needs_device: ClassVar[bool] = True


class FromRequired(BaseModel):
    """A stage whose `from` must be given. Its None default only gives code
    that lists a kind's defaults (the console's templates) a value to read: a
    missing `from` is validated as None, and None is "required". Stages with
    more to check of `from` override `_required`."""

    @model_validator(mode="before")
    @classmethod
    def _from_is_present(cls, data: object) -> object:
        if isinstance(data, dict) and "from" not in data and "from_" not in data:
            data = {**data, "from": None}
        return data

    @field_validator("from_", check_fields=False)
    @classmethod
    def _required(cls, value: str | None) -> str:
        if value is None:
            raise PydanticCustomError("missing", "required")
        return value


class PretrainSpec(StageSpec):
    """Causal-LM next-token training, from scratch or continued from a checkpoint."""

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "data": "data",
    }

    kind: Literal["pretrain"] = "pretrain"
    from_: str = Field(
        "builtin:llama-4m", alias="from",
        description="a built-in model preset (trained from scratch), a stage, a folder or a hub id (continued)",
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer; default: the checkpoint's own, or builtin:bpe-4k for a preset",
    )
    data: str = Field("builtin:stdlib-docs", description="text corpus: builtin, file, folder or hub id")
    text_field: str = Field("text", description="column holding the text in JSONL/parquet/CSV/datasets")
    max_documents: int | None = Field(None, ge=1, description="use at most this many documents")
    block_size: int = Field(128, ge=8, le=131072, description="tokens per packed training block")
    max_steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="blocks per step per process")
    gradient_accumulation_steps: GradientAccumulationSteps = 1
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate of AdamW, reached after warm-up")
    weight_decay: WeightDecay = 0.1
    warmup_steps: WarmupSteps = 10
    lr_scheduler: LrScheduler = "cosine"
    max_grad_norm: MaxGradNorm = 1.0
    eval_fraction: float = Field(0.05, gt=0, lt=1, description="share of documents held out for eval")
    eval_every: int = Field(50, ge=1, description="steps between held-out evaluations")
    eval_batches: int = Field(16, ge=1, description="batches per evaluation (caps its cost)")
    save_every: SaveEvery = 100
    keep_checkpoints: KeepCheckpoints = 2
    log_every: LogEvery = 1


class SampleSpec(StageSpec, FromRequired):
    """K responses to each prompt from one or several models, stored as one batch to rank.

    With several models (`from = ["sft", "pretrain"]`) the K responses to a
    prompt are shared among them round-robin, rotating with the prompt: with
    K a multiple of the number of models each answers K / models times, and
    otherwise every model still writes about as many responses overall. Each
    response records the model that wrote it (`checkpoint`).
    """

    reference_fields: ClassVar[dict[str, str]] = {"from": "model", "prompts": "data"}
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"from"})

    kind: Literal["sample"] = "sample"
    processes: int = Field(1, ge=1, le=1, description="sampling runs in one process (on one GPU)")
    from_: str | list[str] | None = Field(
        None, alias="from",
        description="the model that answers (a stage, a folder, a hub id, or a built-in preset with "
                    "random weights), or an array of models that share the responses",
    )
    prompts: str | list[str] = Field(
        "builtin:demo-prompts",
        description="prompts: builtin:NAME, a .jsonl/.json/.csv/.parquet file (a .txt: one per paragraph), "
                    "a datasets folder or a hub id; or an array of prompts written inline",
    )
    prompt_field: str = Field(
        "prompt", description="column holding the prompt (else a conversation's first user turn, or alpaca's instruction)"
    )
    max_prompts: int | None = Field(None, ge=1, description="use at most this many prompts (the first ones)")
    responses_per_prompt: int = Field(
        4, ge=1, le=9,
        description="K, responses to each prompt in all; ranking wants 2 to 9, 1 gives a plain answer",
    )
    temperature: float = Field(0.8, ge=0, le=100, description="sampling temperature; 0 = greedy")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling: keep the tokens holding this much probability")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="longest response, in tokens")
    batch_size: int = Field(
        32, ge=1,
        description="responses generated at once (prompts per batch = batch_size // K, at least 1)",
    )
    batch_name: str | None = Field(None, description="name of the stored sample batch; default RUN/STAGE")

    @field_validator("from_", "prompts", mode="before")
    @classmethod
    def _one_or_an_array(cls, value: object, info: ValidationInfo) -> object:
        # One line per mistake, where the str | list union would report two.
        what = "a model (a stage name, builtin:NAME, a path or a hub id)" if info.field_name == "from_" \
            else "a data set (builtin:NAME, a path or a hub id)"
        many = "models" if info.field_name == "from_" else "prompts"
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError("one_or_array", f"expected {what} or an array of {many}")
        if not value:
            raise PydanticCustomError("one_or_array", f"expected at least one of the {many}")
        for number, item in enumerate(value, 1):
            if not isinstance(item, str):
                raise PydanticCustomError("one_or_array", f"item {number} of the array is not a string")
            if not item.strip():
                raise PydanticCustomError("one_or_array", f"item {number} of the array is empty")
        return value

    @field_validator("from_")
    @classmethod
    def _required(cls, value: str | list[str] | None) -> str | list[str]:
        if value is None:
            raise PydanticCustomError("missing", "required")
        if isinstance(value, list):
            twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
            if twice is not None:
                raise PydanticCustomError("one_or_array", f"names the model {twice!r} twice")
        return value

    @field_validator("temperature")
    @classmethod
    def _greedy_gives_one_answer(cls, value: float, info: ValidationInfo) -> float:
        models = info.data.get("from_")
        count = len(models) if isinstance(models, list) else 1
        k = info.data.get("responses_per_prompt")
        if value == 0 and isinstance(k, int) and k > count:
            raise PydanticCustomError(
                "greedy_repeats",
                f"0 (greedy) gives the same response every time, so {k} responses per prompt from "
                f"{count} model{'s' if count > 1 else ''} would repeat; raise it above 0 or lower "
                "responses_per_prompt",
            )
        return value

    @property
    def models(self) -> list[str]:
        """The canonical model references, one or several."""
        return list(self.from_) if isinstance(self.from_, list) else [str(self.from_)]

    @property
    def prompt_texts(self) -> list[str] | None:
        """The prompts written inline, or None when `prompts` names a data set."""
        return list(self.prompts) if isinstance(self.prompts, list) else None


class LoraSpec(BaseModel):
    """A `[stages.NAME.lora]` table: train low-rank adapters instead of every weight."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    r: int = Field(16, ge=1, le=4096, description="rank of the adapter matrices")
    alpha: int = Field(32, ge=1, description="scaling numerator: adapter updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: str | list[str] = Field(
        "all-linear",
        description='layers that get adapters: "all-linear" (every linear layer but the output head) '
        'or an array of module names such as ["q_proj", "v_proj"]',
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, value: object) -> object:
        # One line per mistake, where the str | list union would report two.
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
            return value
        raise PydanticCustomError(
            "modules", 'expected "all-linear" or a non-empty array of module names such as ["q_proj", "v_proj"]'
        )


# The fixed prompts a training stage answers while it trains (SFT, DPO), defined
# once so that the fields read the same in every stage that has them.
EvalPrompts = Annotated[str, Field(
    description="prompts the model answers while it trains, stored as samples: "
    "builtin, a file, a datasets folder or a hub id",
)]
EvalPromptCount = Annotated[int, Field(ge=0, description="how many of them (the first ones; 0 = none)")]
SampleEvery = Annotated[int, Field(
    ge=1, description="steps between answering them (also before the first step and after the last)",
)]
SampleTemperature = Annotated[float, Field(ge=0, le=100, description="sampling temperature; 0 = greedy")]
SampleMaxNewTokens = Annotated[int, Field(ge=1, le=32768, description="longest answer, in tokens")]


class SFTSpec(StageSpec):
    """Supervised fine-tuning on instructions and their answers (trl's SFTTrainer)."""

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "data": "data",
        "eval_prompts": "data",
    }

    kind: Literal["sft"] = "sft"
    from_: str = Field(
        "builtin:llama-4m", alias="from",
        description="the model to fine-tune: a stage (usually your pretrain stage), a folder or a hub id; "
        "a built-in preset starts from a random init",
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer; default: the checkpoint's own, or builtin:bpe-4k for a preset",
    )
    # What it learns from.
    data: str = Field(
        "builtin:demo-instructions",
        description="instruction data: builtin, a JSONL/parquet/CSV file, a datasets folder or a hub id",
    )
    format: Literal["auto", "prompt_completion", "messages", "alpaca", "text"] = Field(
        "auto",
        description="auto = from the columns: prompt + completion, messages (chat turns), "
        "instruction + input + output (alpaca), or text (loss on every token)",
    )
    prompt_field: str = Field("prompt", description="column holding the prompt (prompt_completion format)")
    completion_field: str = Field(
        "completion", description="column holding the answer (prompt_completion format)"
    )
    messages_field: str = Field("messages", description="column holding the chat turns (messages format)")
    text_field: str = Field("text", description="column holding the text (text format)")
    max_examples: int | None = Field(None, ge=1, description="use at most this many examples")
    max_length: int = Field(
        512, ge=8, le=131072, description="tokens per example; longer ones are cut at the end"
    )
    completion_only_loss: bool = Field(
        True,
        description="learn the answers only: the completion, or the assistant turns of a conversation; "
        "false = every token (text data always learns every token)",
    )
    # What is trained.
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters (r, alpha, dropout, target_modules); "
        "without one every weight is fine-tuned",
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="QLoRA: load the frozen base model in 4 or 8 bits (needs lora, a CUDA GPU and bitsandbytes)",
    )
    activation_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="recompute activations in the backward pass to save memory; "
        "auto = on a GPU for models of 100M+ parameters or quantized ones, off on the CPU",
    )
    # Schedule.
    max_steps: int = Field(400, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="examples per step per process")
    gradient_accumulation_steps: GradientAccumulationSteps = 1
    learning_rate: float = Field(
        1e-3, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models: "
        "use ~2e-5 (every weight) or ~2e-4 (LoRA) for models of 100M+ parameters",
    )
    weight_decay: WeightDecay = 0.0
    warmup_steps: WarmupSteps = 10
    lr_scheduler: LrScheduler = "cosine"
    max_grad_norm: MaxGradNorm = 1.0
    # Held-out loss and checkpoints.
    eval_fraction: float = Field(
        0.05, gt=0, lt=1, description="share of distinct prompts held out for the eval loss"
    )
    eval_every: int = Field(50, ge=1, description="steps between held-out loss evaluations")
    eval_batches: int = Field(8, ge=1, description="batches per evaluation (caps its cost)")
    save_every: SaveEvery = 100
    keep_checkpoints: KeepCheckpoints = 2
    log_every: LogEvery = 1
    # Answers to fixed prompts while training, stored as samples.
    eval_prompts: EvalPrompts = "builtin:demo-prompts"
    eval_prompt_count: EvalPromptCount = 8
    sample_every: SampleEvery = 50
    sample_temperature: SampleTemperature = 0.0
    sample_max_new_tokens: SampleMaxNewTokens = 32

    @field_validator("quantization")
    @classmethod
    def _quantization_needs_lora(cls, value: str, info: ValidationInfo) -> str:
        # A lora table that failed its own checks is not in info.data: one problem is enough.
        if value != "none" and "lora" in info.data and info.data["lora"] is None:
            raise PydanticCustomError(
                "needs_lora",
                "quantization (QLoRA) trains adapters on a frozen quantized model: "
                "add a [stages.NAME.lora] table",
            )
        return value


class RankSpec(StageSpec):
    """Judgements on a sample batch: by people in the console, or by an automatic judge.

    With `judge` unset the stage makes the batch rankable and waits until
    people have judged it (`rlhf rank`, or the console's rank screen); it
    holds no device while it waits. With a judge it ranks the batch itself,
    recorded as annotator `judge:NAME`, so human and AI feedback stay apart.
    """

    #: a judge or people, not a GPU: the supervisor starts it without a device slot
    needs_device: ClassVar[bool] = False
    reference_fields: ClassVar[dict[str, str]] = {"from": "data"}

    kind: Literal["rank"] = "rank"
    processes: int = Field(1, ge=1, le=1, description="ranking runs in one process")
    from_: str | None = Field(
        None, alias="from", description="the sample stage of this pipeline whose batch is ranked",
    )
    batch: str | None = Field(
        None, description="or a stored sample batch, by name or id (`rlhf rank` lists them)",
    )
    judge: str | None = Field(
        None,
        description="who ranks: unset = people; `demo` = the built-in rule-based judge; or a Python "
        "callable `module:function(prompt, responses) -> scores`",
    )
    judgements_per_item: int = Field(
        1, ge=1, le=9, description="different annotators each item goes to (agreement needs 2 or more)",
    )
    max_responses: int | None = Field(
        None, ge=2, le=9, description="responses per item (the first ones); default all K of a prompt",
    )
    wait_for: float = Field(
        1.0, gt=0, le=1,
        description="people: the share of the batch's judgements to wait for before the stage succeeds",
    )
    pairwise: bool = Field(
        False,
        description="compare answers in pairs of different checkpoints (an arena) instead of ranking all K",
    )

    @field_validator("judge")
    @classmethod
    def _judge_is_named_right(cls, value: str | None) -> str | None:
        # Only the spelling: importing the user's module is the worker's job, not the CLI's.
        if value is not None and value != "demo" and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise PydanticCustomError(
                "judge_name", "expected `demo` or a Python callable written module:function",
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RankSpec:
        if (self.from_ is None) == (self.batch is None):
            raise PydanticCustomError(
                "rank_source",
                "name the batch to rank: `from` (a sample stage) or `batch` (a stored batch), one of them",
            )
        if self.from_ is not None and not self.from_.startswith("stage:"):
            raise PydanticCustomError(
                "rank_source", "`from` must name a sample stage of this pipeline; a stored batch goes in `batch`",
            )
        return self


class PreferenceDataSpec(StageSpec):
    """Fields of the stages that learn from preferences (reward, DPO): which
    judgements and files they read, how ties count, and the held-out split.
    Not a stage kind itself."""

    reference_fields: ClassVar[dict[str, str]] = {"preferences": "data"}
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    preferences: str | list[str] | None = Field(
        None,
        description="rank (or sample) stages of this pipeline whose judgements to learn from, and/or "
        "preference files (JSONL/parquet: TRL prompt/chosen/rejected, Anthropic HH, ranked lists, "
        "judgement tables)",
    )
    batches: list[str] = Field(
        default_factory=list, description="stored sample batches whose judgements to learn from, by name or id",
    )
    annotators: Literal["all", "people", "judges", "imported"] = Field(
        "all",
        description="whose judgements from the store: people, judges (judge:NAME), imported ones, or all",
    )
    annotator_names: list[str] = Field(
        default_factory=list, description="only these annotators (exact names, e.g. alice or judge:demo)",
    )
    since: str | None = Field(None, description="only judgements made at or after this ISO date/time")
    until: str | None = Field(None, description="only judgements made before this ISO date/time")
    ties: Literal["drop", "margin"] = Field(
        "drop",
        description="drop = ties and both-bad make no pairs; margin = pairs carry a margin of "
        "margin_per_rank per rank apart, and a tie becomes two pairs with margin 0",
    )
    margin_per_rank: float = Field(1.0, ge=0, description="margin per rank apart (ties = margin)")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of prompts held out (all pairs of a prompt stay on one side)",
    )
    max_pairs: int | None = Field(None, ge=1, description="use at most this many training pairs")

    @field_validator("preferences", mode="before")
    @classmethod
    def _one_or_an_array_of_sources(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise PydanticCustomError(
            "one_or_array", "expected a stage or file, or a non-empty array of stages and files",
        )

    @field_validator("since", "until")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise PydanticCustomError(
                    "iso_time", "expected an ISO date or date-time such as 2026-11-21 or 2026-11-21T09:30",
                ) from None
        return value

    @model_validator(mode="after")
    def _some_data(self) -> PreferenceDataSpec:
        if self.preferences is None and not self.batches:
            raise PydanticCustomError(
                "no_preferences", "name what to learn from: `preferences` (rank stages or files) and/or `batches`",
            )
        return self

    @property
    def preference_sources(self) -> list[str]:
        if self.preferences is None:
            return []
        return [self.preferences] if isinstance(self.preferences, str) else list(self.preferences)



class DPOSpec(PreferenceDataSpec, FromRequired):
    """Direct preference optimisation: the policy learns from chosen/rejected pairs (trl's DPOTrainer).

    No reward model: the loss raises the policy's log-probability of the
    chosen response over the rejected one, measured against a frozen
    reference, the model it starts from; `beta` says how far it may drift.
    """

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "preferences": "data",
        "eval_prompts": "data",
    }
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    kind: Literal["dpo"] = "dpo"
    from_: str | None = Field(
        None, alias="from",
        description="the policy to start from, which is also the frozen reference: a stage (usually your "
        "sft stage), a folder or a hub id",
    )
    tokenizer: str | None = Field(None, description="tokenizer; default: the checkpoint's own")
    # The objective.
    beta: float = Field(
        0.1, gt=0,
        description="how far the policy may drift from the reference: higher stays closer "
        "(for ipo, the regularisation tau)",
    )
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid = the DPO paper's loss; ipo = IPO's squared loss, less prone to overfit",
    )
    sft_weight: float = Field(
        0.0, ge=0,
        description="adds this times the chosen responses' mean token NLL to the loss (RPO): keeps them likely, "
        "against DPO's habit of lowering chosen and rejected alike; 0 = plain DPO",
    )
    # What is trained.
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters, and the reference is the policy with "
        "its adapters off (no second copy); without one every weight is trained against a frozen copy",
    )
    precompute_ref_log_probs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="score every pair under the reference once before training instead of at every step; "
        "auto = on when training sees every pair at least once (one process)",
    )
    activation_checkpointing: ActivationCheckpointing = "auto"
    max_length: int = Field(
        256, ge=8, le=131072, description="tokens per prompt + response; longer ones are cut at the end",
    )
    # Schedule.
    max_steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="pairs per step per process")
    gradient_accumulation_steps: GradientAccumulationSteps = 1
    learning_rate: float = Field(
        1e-4, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models: "
        "use ~5e-7 (every weight) or ~5e-6 (LoRA) for models of 1B+ parameters",
    )
    weight_decay: WeightDecay = 0.0
    warmup_steps: WarmupSteps = 10
    lr_scheduler: LrScheduler = "cosine"
    max_grad_norm: MaxGradNorm = 1.0
    # Held-out pairs and checkpoints.
    eval_every: int = Field(25, ge=1, description="steps between evaluations on the held-out pairs")
    save_every: SaveEvery = 100
    keep_checkpoints: KeepCheckpoints = 2
    log_every: LogEvery = 1
    # Answers to fixed prompts while training, stored as samples.
    eval_prompts: EvalPrompts = "builtin:demo-prompts"
    eval_prompt_count: EvalPromptCount = 8
    sample_every: SampleEvery = 50
    sample_temperature: SampleTemperature = 0.0
    sample_max_new_tokens: SampleMaxNewTokens = 32


class RewardSpec(PreferenceDataSpec, FromRequired):
    """A reward model: a scalar score per response, learned from chosen/rejected pairs (trl's RewardTrainer).

    The model it starts from (usually your SFT stage) gets a one-output head
    in place of its language-model head; the loss pushes the chosen
    response's score above the rejected one's (Bradley-Terry). All pairs of a
    prompt go into one batch, as InstructGPT trains its C(K,2) comparisons.
    """

    reference_fields: ClassVar[dict[str, str]] = {
        "from": "model",
        "tokenizer": "tokenizer",
        "preferences": "data",
    }
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    kind: Literal["reward"] = "reward"
    from_: str | None = Field(
        None, alias="from",
        description="the model to start from: a stage (usually your sft stage), a folder or a hub id; "
        "a built-in preset starts from a random init",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer; default: the checkpoint's own, or builtin:bpe-4k for a preset",
    )
    # What is trained.
    lora: LoraSpec | None = Field(
        None,
        description="a [stages.NAME.lora] table trains LoRA adapters (and the score head); "
        "without one every weight is trained",
    )
    activation_checkpointing: ActivationCheckpointing = "auto"
    max_length: int = Field(
        512, ge=8, le=131072,
        description="tokens per prompt + response; pairs with a longer side are left out (and counted in the log)",
    )
    group_by_prompt: bool = Field(
        True,
        description="all pairs of a prompt in one batch (InstructGPT), so a response is not fitted again and "
        "again across steps; false = pairs shuffled one by one",
    )
    # Schedule.
    max_steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(
        16, ge=1,
        description="pairs per step per process (with group_by_prompt, whole prompts: about this many)",
    )
    gradient_accumulation_steps: GradientAccumulationSteps = 1
    learning_rate: float = Field(
        1e-4, gt=0,
        description="peak learning rate of AdamW; suits the tiny built-in models (higher ones forget what SFT "
        "taught, measured on the demo task): use ~1e-5 (every weight) or ~1e-4 (LoRA) for models of 100M+ parameters",
    )
    weight_decay: WeightDecay = 0.0
    warmup_steps: WarmupSteps = 10
    lr_scheduler: LrScheduler = "cosine"
    max_grad_norm: MaxGradNorm = 1.0
    # Held-out pairs and checkpoints.
    eval_every: int = Field(25, ge=1, description="steps between evaluations on the held-out pairs")
    save_every: SaveEvery = 100
    keep_checkpoints: KeepCheckpoints = 2
    log_every: LogEvery = 1


class ScoreSpec(StageSpec, FromRequired):
    """Reward scores for the responses of a sample batch, stored beside them.

    Each response is framed as training framed it (the prompt as a user turn,
    the response as the assistant's, in the tokenizer's chat template) and
    scored by the reward model; the scores are recorded under the model's
    folder (or hub id), so several reward models can score the same batch.
    """

    reference_fields: ClassVar[dict[str, str]] = {"from": "model", "samples": "data"}

    kind: Literal["score"] = "score"
    processes: int = Field(1, ge=1, le=1, description="scoring runs in one process (on one GPU)")
    from_: str | None = Field(
        None, alias="from", description="the reward model: a reward stage, a folder or a hub id",
    )
    samples: str | None = Field(
        None, description="the sample (or rank) stage of this pipeline whose batch is scored",
    )
    batch: str | None = Field(
        None, description="or a stored sample batch, by name or id (`rlhf rank --list` lists them)",
    )
    batch_size: int = Field(32, ge=1, description="responses scored at once")
    max_length: int = Field(
        1024, ge=8, le=131072,
        description="tokens per prompt + response; a longer one keeps its end, where the score is read",
    )

    @field_validator("from_")
    @classmethod
    def _required(cls, value: str | None) -> str:
        if value is None:
            raise PydanticCustomError("missing", "required")
        if value.startswith("builtin:"):
            raise PydanticCustomError(
                "reward_model", "expected a trained reward model (a reward stage, a folder or a hub id), "
                "not a built-in preset",
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ScoreSpec:
        if (self.samples is None) == (self.batch is None):
            raise PydanticCustomError(
                "score_source",
                "name the responses to score: `samples` (a sample stage) or `batch` (a stored batch), one of them",
            )
        if self.samples is not None and not self.samples.startswith("stage:"):
            raise PydanticCustomError(
                "score_source",
                "`samples` must name a sample or rank stage of this pipeline; a stored batch goes in `batch`",
            )
        return self


class PPOSpec(StageSpec, FromRequired):
    """RLHF with PPO: the policy learns to please a reward model, on a KL leash to where it started.

    Each update samples a response to `rollout_batch_size` prompts, scores
    each with the reward model, subtracts beta times the per-token KL to the
    frozen reference (the starting policy), and takes `ppo_epochs` passes of
    clipped PPO steps over minibatches of those responses (InstructGPT's
    recipe; our own implementation, engine/stages/ppo/stage.py).
    """

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
    # The prompts it practises on.
    prompts: str = Field(
        "builtin:demo-instructions",
        description="prompts to sample responses to: builtin, a file, a datasets folder or a hub id "
        "(the default: the demo task's train split)",
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
    # Checkpoints and what people see.
    save_every: int = Field(20, ge=1, description="updates between resumable checkpoints")
    keep_checkpoints: KeepCheckpoints = 2
    sample_every: int = Field(
        10, ge=1,
        description="updates between storing rollout responses with their reward and KL, and answering "
        "the eval prompts (also before the first update and after the last)",
    )
    samples_per_update: int = Field(4, ge=0, description="rollout responses stored each time (0 = none)")
    eval_prompts: EvalPrompts = "builtin:demo-prompts"
    eval_prompt_count: EvalPromptCount = 8
    sample_temperature: SampleTemperature = 0.0
    sample_max_new_tokens: SampleMaxNewTokens = 32

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
        if value.startswith("builtin:"):
            raise PydanticCustomError(
                "reward_model", "expected a trained reward model (a reward stage, a folder or a hub id), "
                "not a built-in preset",
            )
        return value

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


#: how a spec names a judge: the built-in rule-based one, or a Python callable
_JUDGE_NAME = re.compile(r"demo|[A-Za-z_][\w.]*:[A-Za-z_]\w*", re.ASCII)


class OnlineRLSpec(StageSpec, FromRequired):
    """Fields the RLOO and GRPO stages share (trl's online trainers): each step
    samples K completions per prompt, scores them with a reward model and/or
    judges, and moves the policy towards the completions that beat the others
    of their prompt, on a KL leash to where it started. Not a stage kind itself."""

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
    activation_checkpointing: ActivationCheckpointing = "auto"
    # The prompts it practises on.
    prompts: str = Field(
        "builtin:demo-instructions",
        description="prompts to sample completions for: builtin, a file, a datasets folder or a hub id "
        "(the default: the demo task's train split)",
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
    # Checkpoints and what people see.
    save_every: SaveEvery = 20
    keep_checkpoints: KeepCheckpoints = 2
    eval_prompts: EvalPrompts = "builtin:demo-prompts"
    eval_prompt_count: EvalPromptCount = 8
    sample_every: SampleEvery = 10
    samples_per_step: int = Field(
        4, ge=0,
        description="completions of the step stored every sample_every steps, with their scores (0 = none)",
    )
    sample_temperature: SampleTemperature = 0.0
    sample_max_new_tokens: SampleMaxNewTokens = 32

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
        if value is not None and value.startswith("builtin:"):
            raise PydanticCustomError(
                "reward_model", "expected a trained reward model (a reward stage, a folder or a hub id), "
                "not a built-in preset",
            )
        return value

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


class GRPOSpec(OnlineRLSpec):
    """GRPO: group-relative policy optimisation on K completions per prompt (trl's GRPOTrainer).

    Each completion's score is compared with the mean (and scaled by the
    standard deviation) of its prompt's group; the KL to the reference is a
    penalty in the loss, per token (DeepSeekMath, 2024).
    """

    kind: Literal["grpo"] = "grpo"
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo",
        description="how per-token losses are averaged: dapo = over every token of the step (trl's default), "
        "grpo = per completion then over completions, dr_grpo = over max_new_tokens per completion, "
        "bnpo = over the tokens of each micro-batch",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="divide advantages by the standard deviation of the prompt's group, of the whole batch, "
        "or not at all (Dr. GRPO)",
    )


#: every stage kind this version knows, by the `kind` key of its table
STAGE_KINDS: dict[str, type[StageSpec]] = {
    "pretrain": PretrainSpec,
    "sft": SFTSpec,
    "sample": SampleSpec,
    "rank": RankSpec,
    "reward": RewardSpec,
    "score": ScoreSpec,
    "dpo": DPOSpec,
    "ppo": PPOSpec,
    "rloo": RLOOSpec,
    "grpo": GRPOSpec,
}

#: the module whose `run(ctx)` executes each kind (imported only in workers)
STAGE_MODULES: dict[str, str] = {
    "pretrain": "engine.stages.pretrain.stage",
    "sft": "engine.stages.sft.stage",
    "sample": "engine.stages.sample.stage",
    "rank": "engine.stages.rank.stage",
    "reward": "engine.stages.reward.stage",
    "score": "engine.stages.score.stage",
    "dpo": "engine.stages.dpo.stage",
    "ppo": "engine.stages.ppo.stage",
    "rloo": "engine.stages.rloo.stage",
    "grpo": "engine.stages.grpo.stage",
}

#: kinds announced for later versions: rejected with a clear message, not "unknown"
PLANNED_KINDS: tuple[str, ...] = ()


def register_stage(kind: str, spec: type[StageSpec], module: str) -> None:
    """Add a stage kind: its spec model and the module holding its `run(ctx)`.

    Plugins named in RLHF_STAGE_PLUGINS (comma-separated modules) call this
    when imported; they are imported in every process, workers included."""
    STAGE_KINDS[kind] = spec
    STAGE_MODULES[kind] = module


def _load_plugins() -> None:
    for name in os.environ.get("RLHF_STAGE_PLUGINS", "").split(","):
        if name.strip():
            importlib.import_module(name.strip())


_load_plugins()
