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
import os
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class StageSpec(BaseModel):
    """Fields every stage kind has."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True,
        frozen=True, allow_inf_nan=False,  # TOML accepts inf and nan; no setting wants them
    )

    #: reference fields -> the built-in catalogue section they may name
    reference_fields: ClassVar[dict[str, str]] = {}

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
    gradient_accumulation_steps: int = Field(
        1, ge=1,
        description="micro-batches per optimizer step (effective batch = batch_size x this x processes)",
    )
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate of AdamW, reached after warm-up")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(10, ge=0, description="steps of linear warm-up from 0 to learning_rate")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warm-up"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    eval_fraction: float = Field(0.05, gt=0, lt=1, description="share of documents held out for eval")
    eval_every: int = Field(50, ge=1, description="steps between held-out evaluations")
    eval_batches: int = Field(16, ge=1, description="batches per evaluation (caps its cost)")
    save_every: int = Field(100, ge=1, description="steps between resumable checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="resumable checkpoints kept on disk")
    log_every: int = Field(1, ge=1, description="steps between logged train metrics")


#: every stage kind this version knows, by the `kind` key of its table
STAGE_KINDS: dict[str, type[StageSpec]] = {
    "pretrain": PretrainSpec,
}

#: the module whose `run(ctx)` executes each kind (imported only in workers)
STAGE_MODULES: dict[str, str] = {
    "pretrain": "engine.stages.pretrain",
}

#: kinds announced for later versions: rejected with a clear message, not "unknown"
PLANNED_KINDS = ("sft", "sample", "reward", "dpo", "ppo")


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
