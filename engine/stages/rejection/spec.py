"""What a rejection stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.feedback.judges import is_judge_name
from engine.spec.fields import StageSpec


class RejectionSpec(StageSpec):
    """Rejection sampling: the best of each prompt's K answers, kept for an sft stage to train on.

    The policy answers each prompt K times (a sample stage); a reward model
    (through the score stage that scored the batch), a judge or people's
    rankings (a rank stage) score the answers; the best one per prompt is kept, unless even it scores below
    `threshold`. The kept answers go to `final/chosen.jsonl` (prompt,
    completion and why it was chosen), which an sft stage names as its data
    (`data = "THIS STAGE"`), and to a sample batch of their own, each
    answer's meta saying why it was chosen. Llama 2 tuned this way before PPO.
    """

    reference_fields: ClassVar[dict[str, str]] = {"samples": "data"}
    needs_device: ClassVar[bool] = False  # it reads scores or asks a rule-based judge: no model loads

    kind: Literal["rejection"] = "rejection"
    processes: int = Field(1, ge=1, le=1, description="choosing runs in one process")
    samples: str | None = Field(
        None,
        description="the score stage of this pipeline whose reward-model scores choose (its batch is the one "
        "it scored), or, with `judge`, the sample stage whose answers to choose from",
    )
    batch: str | None = Field(
        None, description="or a stored sample batch, by name or id (with `judge`, or `scorer`)",
    )
    judge: str | None = Field(
        None, description="score the answers with this judge instead: demo, or a Python callable module:function",
    )
    scorer: str | None = Field(
        None, description="with `batch`: the reward model whose stored scores choose, as the store names it",
    )
    rankings: bool = Field(
        False,
        description="people's rankings of the batch choose instead (a rank stage in `samples`): an answer "
        "scores the share of the others it was ranked above, ties half, both bad 0, averaged over people",
    )
    threshold: float | None = Field(
        None, description="a prompt whose best answer scores below this contributes nothing; none: every prompt",
    )
    batch_name: str | None = Field(None, description="name of the stored batch of chosen answers; default RUN/STAGE")

    @field_validator("judge")
    @classmethod
    def _judge_name(cls, value: str | None) -> str | None:
        if value is not None and not is_judge_name(value):
            raise PydanticCustomError("judge", "{name!r} is neither `demo` nor a Python callable written "
                                      "module:function", {"name": value})
        return value

    @model_validator(mode="after")
    def _one_source_and_one_scorer(self) -> RejectionSpec:
        if (self.samples is None) == (self.batch is None):
            raise PydanticCustomError("samples", "name the answers: `samples` (a stage) or `batch`, one of them")
        scorers = [name for name, set_ in (("judge", self.judge is not None), ("scorer", self.scorer is not None),
                                           ("rankings", self.rankings)) if set_]
        if len(scorers) > 1:
            raise PydanticCustomError("scorer", "{names}: set only one of them (each scores the answers)",
                                      {"names": " and ".join(f"`{n}`" for n in scorers)})
        if self.batch is not None and not scorers:
            raise PydanticCustomError(
                "scorer", "a stored batch needs what scores it: `judge`, `rankings`, or `scorer` (a reward model's "
                "name)",
            )
        return self
