"""What a sample stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engine.spec.fields import FromRequired, StageSpec


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
    demo_defaults: ClassVar[dict[str, str]] = {"prompts": "builtin:demo-prompts"}

    kind: Literal["sample"] = "sample"
    processes: int = Field(1, ge=1, le=1, description="sampling runs in one process (on one GPU)")
    from_: str | list[str] | None = Field(
        None, alias="from",
        description="the model that answers (a stage, a folder, a hub id, or a built-in preset with "
                    "random weights), or an array of models that share the responses",
    )
    prompts: str | list[str] | None = Field(
        None,
        description="prompts: builtin:NAME, a .jsonl/.json/.csv/.parquet file (a .txt: one per paragraph), "
                    "a datasets folder or a hub id; or an array of prompts written inline. Required, "
                    "unless the model is a built-in demo model (then the demo task's held-out prompts)",
    )
    prompt_field: str = Field(
        "prompt",
        description="column holding the prompt (else a conversation's first user turn, or alpaca's instruction)",
    )
    max_prompts: int | None = Field(None, ge=1, description="use at most this many prompts (the first ones)")
    responses_per_prompt: int = Field(
        4, ge=1, le=9,
        description="K, responses to each prompt in all; ranking wants 2 to 9, 1 gives a plain answer",
    )
    temperature: float = Field(0.8, ge=0, le=100, description="sampling temperature; 0 = greedy")
    top_p: float = Field(
        0.95, gt=0, le=1, description="nucleus sampling: keep the tokens holding this much probability"
    )
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
    def _distinct_models(cls, value: str | list[str] | None) -> str | list[str] | None:
        # None is FromRequired._required's to reject.
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
