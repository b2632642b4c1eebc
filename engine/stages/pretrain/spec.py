"""What a pretrain stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.spec.fields import (
    CheckpointSettings,
    StageSpec,
    TrainerScheduleSettings,
    WeightDecay,
)


class PretrainSpec(StageSpec, TrainerScheduleSettings, CheckpointSettings):
    """Causal-LM next-token training, from scratch or continued from a checkpoint."""

    #: continued pretraining of a user's model never reads the demo's corpus by default
    demo_defaults: ClassVar[dict[str, str]] = {"data": "builtin:stdlib-docs"}
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
    data: str = Field(
        "builtin:stdlib-docs",
        description="text corpus: builtin, file, folder or hub id; required, unless the model is a built-in "
        "preset (then the stdlib's docstrings)",
    )
    text_field: str = Field("text", description="column holding the text in JSONL/parquet/CSV/datasets")
    max_documents: int | None = Field(None, ge=1, description="use at most this many documents")
    block_size: int = Field(128, ge=8, le=131072, description="tokens per packed training block")
    # Schedule: TrainerScheduleSettings, placed here, with this kind's own defaults and help.
    batch_size: int = Field(8, ge=1, description="blocks per step per process")
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate of AdamW, reached after warm-up")
    weight_decay: WeightDecay = 0.1
    eval_fraction: float = Field(0.05, gt=0, lt=1, description="share of documents held out for eval")
    eval_every: int = Field(50, ge=1, description="steps between held-out evaluations")
    eval_batches: int = Field(16, ge=1, description="batches per evaluation (caps its cost)")
