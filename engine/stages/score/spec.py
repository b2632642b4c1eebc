"""What a score stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.spec.fields import FromRequired, StageSpec, trained_reward_model


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
        return trained_reward_model(value)

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
