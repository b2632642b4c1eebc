"""What a rank stage accepts (torch-free; its run is stage.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from engine.spec.fields import JudgeName, StageSpec


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
    judge: JudgeName | None = Field(
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

    order: Literal["batch", "active"] = Field(
        "batch",
        description="serving order: `batch` = as sampled; `active` = the items a small reward-model ensemble "
        "trained on the judgements so far is least sure of first (README: active order)",
    )
    refresh_every: int | None = Field(
        None, ge=1,
        description="order = active: retrain the ensemble and re-order the unjudged items after every N new "
        "judgements (unset: ordered once, at the start)",
    )

    @model_validator(mode="after")
    def _refresh_needs_active(self) -> RankSpec:
        if self.refresh_every is not None and self.order != "active":
            raise PydanticCustomError("rank_refresh", "refresh_every re-orders an active batch: set order = \"active\"")
        return self

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
