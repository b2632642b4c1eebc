"""The parts of a stage spec that several kinds share, written once.

Spec = our description (PretrainSpec); Config = the library object a stage
builds from it (transformers.TrainingArguments). Field descriptions are the
help text `rlhf init` and the console's launch form show.

Here: `StageSpec`, the base every kind's spec derives from (kind, processes,
device, precision, seed); `FromRequired`; `trained_reward_model`, the check of a
reward model reference; `LoraSpec`; field types whose
bounds and help are the same wherever they appear (a kind gives each its own
default: `weight_decay: WeightDecay = 0.1`); and settings groups a kind takes
in as a base, `TrainerScheduleSettings`, `CheckpointSettings` and
`EvalAnswerSettings`, whose defaults a kind overrides by redeclaring the
field with the same type. Each kind's own spec lives beside its run, in
engine/stages/KIND/spec.py; the registry of kinds is engine/stages/registry.py.

Reference fields (`from`, `tokenizer`, `data`) are written by people as a
stage name, `builtin:NAME`, a local path or a hub id; the pipeline loader
rewrites them to one canonical form: `stage:NAME`, `builtin:NAME`,
`path:/absolute/path` or `hub:org/name` (see engine/spec/refs.py). A data
reference may name the subset, split and hub revision it reads:
`org/name@REV?subset=S&split=T` (engine/spec/data_refs.py).

Torch-free: imported by the CLI and the console.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.feedback.judges import is_judge_name
from engine.spec.pass_through import check_lora_extras, check_trainer

# -- field types ------------------------------------------------------------------
# Settings several stages share, defined once so that they read (and validate)
# the same everywhere; a stage gives each its own default.
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
    "auto = on a GPU for models of 100M+ parameters or quantized ones, off on the CPU",
)]


def _quantizes_pretrained_weights(value: str, info: ValidationInfo) -> str:
    # Declared after `from` and `lora`, so both are in info.data unless they failed their own
    # checks (then they are absent, and one problem is enough).
    if value == "none":
        return value
    if "lora" in info.data and info.data["lora"] is None:
        raise PydanticCustomError(
            "needs_lora", "quantization (QLoRA) trains adapters on a frozen quantized model: "
            "add a [stages.NAME.lora] table",
        )
    source = info.data.get("from_")
    if isinstance(source, str) and source.startswith("builtin:"):
        raise PydanticCustomError(
            "needs_weights", "quantization needs pretrained weights to quantize, and {source} is a random init: "
            "name a stage, a folder or a hub id in `from`", {"source": source},
        )
    return value


#: QLoRA: the frozen base a stage trains LoRA adapters on, in 4 or 8 bits (engine/stages/common/quantized.py).
#: A kind declares it after `from` and `lora`, which it checks.
Quantization = Annotated[
    Literal["none", "4bit", "8bit"],
    AfterValidator(_quantizes_pretrained_weights),
    Field(description="QLoRA: load the frozen base model in 4 or 8 bits (needs lora, a CUDA GPU and bitsandbytes)"),
]
#: The models an RL stage only runs forward (the reward model, and a reference that is a copy of the policy).
FrozenQuantization = Annotated[Literal["none", "4bit", "8bit"], Field(
    description="the frozen models: the reward model, and the reference where it is a copy of the policy "
    "(without lora); none = in the compute precision (bf16 on GPUs that support it, else fp32), 4bit or "
    "8bit = quantized (needs a CUDA GPU and bitsandbytes; the KL to a quantized reference starts above 0)",
)]

# The fixed prompts a training stage answers while it trains (SFT, DPO, PPO, RLOO, GRPO).
EvalPrompts = Annotated[str | None, Field(
    description="prompts the model answers while it trains, stored as samples: builtin, a file, a datasets "
    "folder or a hub id (?split=test_sft names a split); unset = a held-out share of the stage's own prompts, "
    "never trained on",
)]
EvalPromptCount = Annotated[int, Field(ge=0, description="how many of them (the first ones; 0 = none)")]


def _judge_name(value: str) -> str:
    # Only the spelling: importing the user's module is the stage process's job, not the CLI's.
    if not is_judge_name(value):
        raise PydanticCustomError("judge_name", "expected `demo` or a Python callable written module:function")
    return value


#: a judge named in a spec: the demo task's rule-based judge, or your own callable
JudgeName = Annotated[str, AfterValidator(_judge_name)]
SampleEvery = Annotated[int, Field(
    ge=1, description="steps between answering them (also before the first step and after the last)",
)]
SampleTemperature = Annotated[float, Field(ge=0, le=100, description="sampling temperature; 0 = greedy")]
SampleMaxNewTokens = Annotated[int, Field(ge=1, le=32768, description="longest answer, in tokens")]

#: the experiment trackers a stage can report to -> the package each needs (engine/stages/common/trackers.py)
TRACKER_PACKAGES: dict[str, str] = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}


def _package_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


#: the validation context of a stage table read back from the store (`model_validate(..., context=STORED)`)
STORED: dict[str, bool] = {"stored": True}


def _tracker_installed(name: str, info: ValidationInfo) -> str:
    # Checked where the spec is validated, without importing the package (wandb alone takes seconds):
    # a missing one is exit 2 from `rlhf run`/`rlhf validate`, not a failure after the model has loaded.
    # Not for a stored table (the worker's): it was checked at submission, and a package removed since
    # is one StageFailed line when the stage opens its trackers (trackers.py), not a validation traceback.
    package = TRACKER_PACKAGES[name]
    if not (info.context or {}).get("stored") and not _package_installed(package):
        raise PydanticCustomError(
            "report_to", "not installed here (pip install {package}, or every tracker: "
            "pip install 'rlhf-console[trackers]')", {"package": package},
        )
    return name


def _no_tracker_twice(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise PydanticCustomError("report_to", "names a tracker twice")
    return value


#: where a stage's metrics go besides the store; a pipeline's [defaults] table may set it for every stage
ReportTo = Annotated[
    list[Annotated[Literal["tensorboard", "trackio", "wandb"], AfterValidator(_tracker_installed)]],
    AfterValidator(_no_tracker_twice),
    Field(description="experiment trackers that also get every metric the stage stores: tensorboard, trackio, "
          "wandb (all offline; W&B unless WANDB_MODE says otherwise); [] = the store only; a [defaults] table "
          "may set it for every stage"),
]

#: a host name or an IPv4/IPv6 address, as torch.distributed's rendezvous takes it
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*|\[[0-9A-Fa-f:.]+\]", re.ASCII)


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
    #: fields a user must give, except where the stage's model is a built-in demo model (through
    #: the stages it comes from): that one defaults to the demo task's data, named here. A user's
    #: own model never falls back on the demo's data (the pipeline loader applies this).
    demo_defaults: ClassVar[dict[str, str]] = {}
    #: plain path fields (not references) the loader makes absolute, relative to the spec's folder
    path_fields: ClassVar[frozenset[str]] = frozenset({"accelerate_config"})

    kind: str
    processes: int = Field(
        1, ge=1, le=64,
        description="worker processes on each machine (one per GPU); more than 1 launches the stage "
        "through `accelerate launch`",
    )
    # How the processes share the work, and where they run (engine/runtime/launcher.py turns these
    # into accelerate's own flags). Checked here for their shape only: whether this machine can run
    # them (CUDA, the deepspeed package, the config file) is checked when the stage starts, so a
    # spec written on a laptop for a GPU machine validates on the laptop.
    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = Field(
        "ddp",
        description="how the processes share the work: ddp (each holds the whole model), fsdp (parameters, "
        "gradients and optimizer state sharded), deepspeed-zero2 (gradients and optimizer state sharded) "
        "or deepspeed-zero3 (everything sharded); fsdp and deepspeed need CUDA GPUs",
    )
    accelerate_config: str | None = Field(
        None,
        description="an accelerate config file (as `accelerate config` writes it; relative to the spec's folder) "
        "that decides "
        "everything but processes, machines and ranks, which this spec still gives; instead of strategy",
    )
    main_process_ip: str | None = Field(
        None, description="machines > 1: the address of the machine of rank 0, reachable from every machine",
    )
    main_process_port: int | None = Field(
        None, ge=1, le=65535,
        description="the port the processes meet on; default: a free port on one machine, 29500 across machines",
    )
    machines: int = Field(
        1, ge=1, le=1024,
        description="machines the stage runs on: each starts the same spec with its own machine_rank "
        "(processes is per machine)",
    )
    machine_rank: int = Field(0, ge=0, description="this machine's rank among them; 0 = the main machine")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = the GPUs if any are visible, else the CPU"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 autocast on GPUs that support it, else fp32"
    )
    seed: int = Field(0, description="seed for initialisation, data order and sampling")
    # A hung stage (a stopped process, a dead collective, a stuck read) would look healthy forever:
    # the run process's heartbeat goes on. Its step is watched instead.
    stall_minutes: float = Field(
        30, ge=0, le=10080,
        description="a running stage whose step has not advanced for this long is shown as stalled "
        "(rlhf status, the console); generous by default, since an evaluation or a save can take a while; "
        "0 = never",
    )
    on_stall: Literal["warn", "fail"] = Field(
        "warn", description="when stalled: warn (show it, keep waiting) or fail (stop the stage, resumable)",
    )
    report_to: ReportTo = Field(default_factory=list)
    # Checked against the library config's fields (engine/spec/pass_through.py, torch-free), so a
    # mistyped key fails here, before anything trains; the stage lays it over its own keywords.
    trainer: dict[str, Any] | None = Field(
        None,
        description="a [stages.NAME.trainer] table: settings passed as they are to the library config the "
        "stage builds (TrainingArguments, or trl's SFTConfig, RewardConfig, DPOConfig, KTOConfig, ORPOConfig, "
        "CPOConfig, GRPOConfig, RLOOConfig, OnlineDPOConfig; "
        "PPO: its optimizer and Accelerator), e.g. optim, torch_compile, neftune_noise_alpha; the settings "
        "this spec has fields for are set on the stage itself",
    )

    #: whether the stage waits for a device slot (a GPU, or the machine's CPU slot)
    needs_device: ClassVar[bool] = True

    # Cross-field checks sit on the later field (validated in the order written), so that
    # each problem names a field and the value that is wrong, as the loader reports them.
    @field_validator("accelerate_config")
    @classmethod
    def _accelerate_config_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        strategy = info.data.get("strategy")
        if strategy not in (None, "ddp"):
            raise PydanticCustomError(
                "accelerate_config", "strategy {strategy} and an accelerate config file both say how the "
                "processes share the work; give one of them", {"strategy": repr(strategy)},
            )
        path = Path(value.strip())
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            raise PydanticCustomError(
                "accelerate_config", "expected an accelerate config file (.yaml, .yml or .json, "
                "as `accelerate config` writes it)",
            )
        # The pipeline loader makes a relative path absolute (`path_fields`); one still relative here
        # (a spec built in code) would be read from wherever the stage happens to start.
        if not path.expanduser().is_absolute():
            raise PydanticCustomError(
                "accelerate_config", "expected an absolute path (or one starting with ~/) to an accelerate "
                "config file",
            )
        return str(path.expanduser())

    @field_validator("trainer")
    @classmethod
    def _trainer_settings(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if not value:
            return value
        kind = info.data.get("kind")
        if not isinstance(kind, str):
            return value  # the kind's own error is enough
        own = [f.alias or name for name, f in cls.model_fields.items() if name != "trainer"]
        raise_pass_through_problems(check_trainer(kind, value, own))
        return value

    @field_validator("main_process_ip")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not _ADDRESS.fullmatch(value):
            raise PydanticCustomError(
                "main_process_ip", "expected the host name or IP address of the machine of rank 0",
            )
        return value

    @field_validator("machines")
    @classmethod
    def _machines_meet(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and "main_process_ip" in info.data and info.data["main_process_ip"] is None:
            raise PydanticCustomError(
                "machines", "more than one machine needs main_process_ip, the address of the machine of rank 0",
            )
        return value

    @field_validator("machine_rank")
    @classmethod
    def _rank_below_machines(cls, value: int, info: ValidationInfo) -> int:
        machines = info.data.get("machines")
        if isinstance(machines, int) and value >= machines:
            raise PydanticCustomError(
                "machine_rank", "must be below machines ({machines}; ranks count from 0)", {"machines": machines},
            )
        return value

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # pydantic orders fields by the first class in the MRO that declares
        # them, which would put a settings group's fields before the kind's own
        # (`from`, `data`...). Fields are validated, listed by `rlhf init` and
        # shown by the launch form in this order, so it is set to read as the
        # spec classes are written; the schema is rebuilt only when it changes.
        super().__pydantic_init_subclass__(**kwargs)
        order = _written_order(cls)
        if order != list(cls.__pydantic_fields__):
            cls.__pydantic_fields__ = {name: cls.__pydantic_fields__[name] for name in order}
            cls.model_rebuild(force=True)


def _written_order(cls: type[StageSpec]) -> list[str]:
    """The fields of a spec class in the order its classes write them: from
    StageSpec down to `cls`, each class's own fields in its body's order (a
    field keeps the place where it first appears), followed by the fields of
    the settings groups that class takes in as bases. A group marked
    `placed_as_block` (the schedule) goes where the class first redeclares
    one of its fields instead, all of them together in the group's order."""
    order: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, StageSpec)):
            continue
        groups = [base for base in klass.__bases__ if issubclass(base, BaseModel) and not issubclass(base, StageSpec)]
        for name in inspect.get_annotations(klass):
            # A block group goes, whole and in its own order, where the class first writes one of its fields.
            block = next((g for g in groups if getattr(g, "placed_as_block", False) and name in g.model_fields), None)
            order.update(dict.fromkeys(block.model_fields if block else [name]))
        for base in groups:
            order.update(dict.fromkeys(base.model_fields))
    return [name for name in order if name in cls.__pydantic_fields__]


def trained_reward_model(value: str) -> str:
    """`value`, a reference to a reward model, if it can name a trained one:
    a built-in preset is an untrained language model, with no score head."""
    if value.startswith("builtin:"):
        raise PydanticCustomError(
            "reward_model", "expected a trained reward model (a reward stage, a folder or a hub id), "
            "not a built-in preset",
        )
    return value


class FromRequired(BaseModel):
    """A stage whose `from` must be given. Its None default only gives code
    that lists a kind's defaults (the console's templates) a value to read: a
    missing `from` is validated as None, and None is "required". Stages with
    more to check of `from` override `_required`, or add a validator of their own
    beside it where `from` takes more than a string (sample's list of models)."""

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


class LoraSpec(BaseModel):
    """A `[stages.NAME.lora]` table: train low-rank adapters instead of every weight.

    Other keys of peft's LoraConfig (use_dora, use_rslora, init_lora_weights...) are
    kept as extras, checked against its fields, and passed to it as they are."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

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

    @model_validator(mode="after")
    def _extras_are_lora_config_fields(self) -> LoraSpec:
        raise_pass_through_problems(self.extra_problems(self.model_extra or {}))
        return self

    @classmethod
    def extra_problems(cls, table: dict[str, Any]) -> list[tuple[str, str]]:
        """(key, problem) for each bad extra key of a [lora] table. The pipeline loader asks too
        when a field of the table failed: pydantic then skips the check above."""
        extras = {key: value for key, value in table.items() if key not in cls.model_fields}
        return check_lora_extras(extras, list(cls.model_fields))


def raise_pass_through_problems(problems: list[tuple[str, str]]) -> None:
    """One validation error carrying every bad key of a pass-through table; the
    pipeline loader reports each on its own line, as `trainer.KEY` (or `lora.KEY`)."""
    if problems:
        raise PydanticCustomError(
            "pass_through", "{summary}",
            {"summary": "; ".join(f"{key}: {problem}" for key, problem in problems),
             "problems": [list(p) for p in problems]},
        )


# The fixed prompts a training stage answers while it trains (SFT, DPO), defined
# once so that the fields read the same in every stage that has them.

# -- settings groups ------------------------------------------------------------
# A kind takes a group in as a base (class SFTSpec(StageSpec, CheckpointSettings));
# its fields follow the kind's own ones (StageSpec.__pydantic_init_subclass__).


class SettingsGroup(BaseModel):
    """A settings group: fields a kind takes in as a base (see above)."""

    #: False: the group's fields follow the kind's own ones. True: they stand
    #: together where the kind first redeclares one of them (a group in the
    #: middle of a kind's fields, whose kinds each redeclare some of its fields).
    placed_as_block: ClassVar[bool] = False


class TrainerScheduleSettings(SettingsGroup):
    """The optimizer schedule of a Trainer-based stage (pretrain, SFT, reward, DPO).

    Placed as a block: a kind redeclares `batch_size` and `learning_rate`
    (what a batch holds, and the rate that suits it, differ by kind) where
    the schedule stands among its fields, and any other default it changes."""

    placed_as_block: ClassVar[bool] = True

    max_steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int  # each kind's own, with its own default and help
    gradient_accumulation_steps: GradientAccumulationSteps = 1
    learning_rate: float  # each kind's own, with its own default and help
    weight_decay: WeightDecay = 0.0
    warmup_steps: WarmupSteps = 10
    lr_scheduler: LrScheduler = "cosine"
    max_grad_norm: MaxGradNorm = 1.0


class CheckpointSettings(SettingsGroup):
    """Resumable checkpoints and the train-metric cadence of a Trainer-based stage."""

    save_every: SaveEvery = 100
    keep_checkpoints: KeepCheckpoints = 2
    log_every: LogEvery = 1


class EvalAnswerSettings(SettingsGroup):
    """Fixed prompts a policy answers while it trains, stored as samples
    (engine/stages/common/eval_answers.py)."""

    eval_prompts: EvalPrompts = None
    eval_prompt_count: EvalPromptCount = 8
    eval_judge: JudgeName | None = Field(
        None, description="scores the eval answers as eval/judge_score: `demo` (the demo task's judge, for its "
        "prompts only) or a callable `module:function(prompt, responses) -> scores`; unset = no judge score",
    )
    sample_every: SampleEvery = 50
    sample_temperature: SampleTemperature = 0.0
    sample_max_new_tokens: SampleMaxNewTokens = 32
