"""What the stages that learn from preferences (reward, DPO) share in their specs.

Torch-free; the plumbing that reads these fields is preference_data.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.spec.fields import StageSpec


class PreferenceDataSpec(StageSpec):
    """Fields of the stages that learn from preferences (reward, DPO): which
    judgements and files they read, how ties count, and the held-out split.
    Not a stage kind itself."""

    reference_fields: ClassVar[dict[str, str]] = {"preferences": "data"}
    reference_list_fields: ClassVar[frozenset[str]] = frozenset({"preferences"})

    preferences: str | list[str] | None = Field(
        None,
        description="rank (or sample) stages of this pipeline whose judgements to learn from, and/or "
        "preference files (JSONL, .jsonl.gz, parquet: TRL prompt/chosen/rejected, Anthropic HH, ranked "
        "lists, judgement tables), and/or datasets folders or hub datasets of TRL pairs or HH dialogues "
        "(ORG/NAME@REV?subset=S&split=T)",
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
    min_gold_accuracy: float | None = Field(
        None, ge=0, le=1,
        description="leave out annotators whose accuracy on the batches' gold items is below this "
        "(`rlhf prefs gold`; annotators who judged no gold item are kept)",
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
