"""Unpaired feedback for KTO: judgements and files -> completions marked good or bad.

    data = load_unpaired(ctx, spec)     # spec: a PreferenceDataSpec (the kto kind's)
    rows = to_unpaired_dataset(data.train)   # prompt / completion / label

KTO learns from single verdicts, so judgements that make no pair still count:
a "both bad" makes both answers undesirable, and a KTO file's single thumbs
(prompt, completion, label) are read as they are. A preference (A better,
a ranking) makes its best answer desirable and its worst undesirable
(engine/feedback/pairs.py `unpaired_examples` says why the middle is left
out); a tie or a skip says nothing about either answer being good.

The same sources as the pair-reading stages (preference_data.py): rank or
sample stages of this pipeline, stored batches, files, datasets folders and
hub datasets; the same annotator selection; the same held-out split by prompt,
by the same rule, so a kto stage and a dpo stage over the same judgements
hold out the same prompts. The held-out prompts' pairs are kept too, so the
kto stage reports `eval/logp_margin` on the pairs a dpo stage would.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserInputError
from engine.feedback.pairs import preference_pairs, unpaired_examples
from engine.feedback.records import Judgement, PreferencePair, Text, UnpairedExample
from engine.stages.common.context import StageContext
from engine.stages.common.preference_data import (
    PreferenceExample,
    file_judgements,
    select_sources,
    split_by_group,
)
from engine.stages.common.preference_sources import read_preference_source, source_name
from engine.stages.common.preference_spec import PreferenceDataSpec


@dataclass(frozen=True)
class Verdicts:
    """What one judgement (or one file row) gives: its unpaired examples and the pairs it makes."""

    group: str
    annotator: str
    examples: tuple[UnpairedExample, ...]
    pairs: tuple[PreferencePair, ...] = ()
    both_bad: bool = False


@dataclass(frozen=True)
class UnpairedData:
    train: list[UnpairedExample]
    eval: list[UnpairedExample]
    #: the held-out prompts' pairs (for eval/logp_margin), with who judged them
    eval_pairs: list[PreferenceExample]
    summary: dict[str, Any] = field(default_factory=dict)


def load_unpaired(ctx: StageContext, spec: PreferenceDataSpec) -> UnpairedData:
    """The selected judgements and files as KTO's examples, split by prompt."""
    selected = select_sources(ctx, spec)
    batch_refs, files = selected.batch_refs, selected.files
    verdicts = [judgement_verdicts(judgement, judgement.annotator or "unknown") for judgement in selected.judgements]
    for source in files:
        verdicts.extend(_file_verdicts(ctx, source, spec))
    verdicts = [v for v in verdicts if v.examples]
    if not verdicts:
        raise UserInputError(
            "no judgements to learn from: the selected batches have no verdicts by the selected annotators "
            f"({spec.annotators}{', ' + ', '.join(spec.annotator_names) if spec.annotator_names else ''}) "
            "that mark an answer good or bad (ties and skips mark none), and the files hold none"
        )
    train_v, eval_v = split_verdicts(verdicts, spec.eval_fraction, seed=spec.seed)
    train = [e for v in train_v for e in v.examples]
    if spec.max_pairs is not None:
        train = train[: spec.max_pairs]
    # KTO's trainer reads its rows in order and pairs each with its neighbour for
    # the KL estimate: shuffled (by the seed), so neighbours are other prompts.
    random.Random(spec.seed).shuffle(train)
    held_out = [e for v in eval_v for e in v.examples]
    eval_pairs = [PreferenceExample(p, v.annotator) for v in eval_v for p in v.pairs]
    labels = Counter(e.label for e in train + held_out)
    summary = {
        "examples": len(train) + len(held_out), "train_examples": len(train), "eval_examples": len(held_out),
        "desirable": labels[True], "undesirable": labels[False],
        "both_bad_judgements": sum(v.both_bad for v in verdicts),
        "prompts": len({v.group for v in verdicts}),
        "annotators": dict(Counter(v.annotator for v in verdicts)),
        "batches": batch_refs, "files": [f.removeprefix("path:") for f in files],
        "eval_pairs": len(eval_pairs),
    }
    return UnpairedData(train=train, eval=held_out, eval_pairs=eval_pairs, summary=summary)


def judgement_verdicts(judgement: Judgement, annotator: str) -> Verdicts:
    """KTO's examples of one judgement, and the pairs it makes (ties dropped, no margins)."""
    return Verdicts(judgement.prompt_key, annotator, tuple(unpaired_examples([judgement])),
                    tuple(preference_pairs([judgement], ties="drop")), both_bad=judgement.outcome == "both_bad")


def split_verdicts(verdicts: Sequence[Verdicts], fraction: float, *,
                   seed: int = 0) -> tuple[list[Verdicts], list[Verdicts]]:
    """(train, held out): each prompt's verdicts on one side, by the rule of
    preference_data.split_by_prompt (the same prompts held out for the same seed)."""
    return split_by_group(verdicts, lambda v: v.group, fraction, seed=seed)


def to_unpaired_dataset(examples: Sequence[UnpairedExample]) -> Any:
    """A `datasets.Dataset` of prompt / completion conversations and a boolean label, as KTOTrainer reads it."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [_as_chat(e.prompt, "user") for e in examples],
        "completion": [_as_chat(e.completion, "assistant") for e in examples],
        "label": [e.label for e in examples],
    })


def _file_verdicts(ctx: StageContext, reference: str, spec: PreferenceDataSpec) -> list[Verdicts]:
    source = ctx.resolve(reference)
    result = read_preference_source(source)
    who = f"import:{source_name(source)}"
    verdicts = [Verdicts(e.group, who, (e,)) for e in result.unpaired]
    for pair in result.pairs:
        verdicts.append(Verdicts(pair.group, who, (
            UnpairedExample(pair.group, pair.prompt, pair.chosen, True),
            UnpairedExample(pair.group, pair.prompt, pair.rejected, False),
        ), (pair,)))
    # As for pairs: the file's rows count as the file's, whatever annotator they name.
    verdicts.extend(judgement_verdicts(judgement, who) for judgement in file_judgements(result.judgements, who, spec))
    return verdicts


def _as_chat(text: Text, role: str) -> list[dict[str, str]]:
    if isinstance(text, str):
        return [{"role": role, "content": text}]
    return [{"role": m.role, "content": m.content} for m in text]


__all__ = ["UnpairedData", "Verdicts", "judgement_verdicts", "load_unpaired", "split_verdicts",
           "to_unpaired_dataset"]
