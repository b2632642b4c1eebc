"""Preference data for the reward and DPO stages: judgements and files -> pairs.

    data = load_preference_data(ctx, spec)        # spec: a PreferenceDataSpec
    train = to_dataset(data.train)                  # prompt / chosen / rejected (/ margin)

Where pairs come from (`spec.preferences`, `spec.batches`):

- a rank or sample stage of this pipeline: its batch (named in the stage's
  `final/manifest.json`), judged in the store;
- a stored batch, by name or id;
- a file: TRL preference pairs, Anthropic HH dialogues, ranked lists or a
  judgement table (engine/feedback/importers.py), recorded as `import:FILE`;
- a `datasets` folder or a hub dataset of TRL pairs or HH dialogues, the
  subset and split its reference names (preference_sources.py), recorded as
  `import:ORG/NAME?split=...`.

The annotator selection (people, judges, imported, names, dates) applies to
judgements; a file of pairs has no annotators and is taken whole. Rankings of
K become their C(K,2) pairs, grouped by prompt; ties follow `spec.ties`.

The held-out split is by prompt, never by pair: all pairs of a prompt go to
the same side, so held-out accuracy measures prompts the model never saw.
Which side a prompt falls on depends only on its key and the seed, so adding
data later does not move prompts already split.

Prompts and responses become conversations (a user turn, an assistant turn)
when they are plain text, so the tokenizer's chat template frames them the
way SFT taught the policy to read them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import UserInputError
from engine.feedback.pairs import preference_pairs
from engine.feedback.records import Message, PreferencePair, Text
from engine.feedback.stored.selection import Selection, selected_judgements
from engine.stages.common.context import Source, StageContext
from engine.stages.common.preference_sources import read_preference_source, source_name
from engine.stages.common.preference_spec import PreferenceDataSpec


@dataclass(frozen=True)
class PreferenceExample:
    """A pair with who judged it (`import:FILE` for a file's pairs)."""

    pair: PreferencePair
    annotator: str


@dataclass(frozen=True)
class PreferenceData:
    train: list[PreferenceExample]
    eval: list[PreferenceExample]
    #: what was read, for the stage's resolved config and log
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_margins(self) -> bool:
        return any(e.pair.margin is not None for e in self.train + self.eval)


def load_preference_data(ctx: StageContext, spec: PreferenceDataSpec) -> PreferenceData:
    examples: list[PreferenceExample] = []
    batch_refs = list(spec.batches)
    files: list[str] = []  # files, datasets folders and hub datasets, as canonical references
    for source in spec.preference_sources:
        scheme, _, value = source.partition(":")
        if scheme == "stage":
            batch_refs.append(str(stage_batch(ctx, value)))
        else:
            files.append(source)

    if batch_refs:
        selection = Selection(
            batches=tuple(batch_refs), annotators=spec.annotators, names=tuple(spec.annotator_names),
            since=utc_time(spec.since), until=utc_time(spec.until), min_gold_accuracy=spec.min_gold_accuracy,
        )
        for judgement in selected_judgements(ctx.store, selection):
            for pair in preference_pairs([judgement], ties=spec.ties, margin_per_rank=spec.margin_per_rank):
                examples.append(PreferenceExample(pair, judgement.annotator or "unknown"))
    for source in files:
        examples.extend(_file_examples(ctx.resolve(source), spec))

    if not examples:
        raise UserInputError(
            "no preference pairs to learn from: the selected batches have no judgements by the selected "
            f"annotators ({spec.annotators}{', ' + ', '.join(spec.annotator_names) if spec.annotator_names else ''})"
            " and the files hold none (ties and both-bad make no pairs under ties = \"drop\")"
        )
    train, held_out = split_by_prompt(examples, spec.eval_fraction, seed=spec.seed)
    if spec.max_pairs is not None:
        train = train[: spec.max_pairs]
    summary = {
        "pairs": len(examples), "train_pairs": len(train), "eval_pairs": len(held_out),
        "prompts": len({e.pair.group for e in examples}),
        "annotators": dict(Counter(e.annotator for e in examples)),
        "batches": batch_refs, "files": [f.removeprefix("path:") for f in files], "ties": spec.ties,
    }
    return PreferenceData(train=train, eval=held_out, summary=summary)


def split_by_prompt(
    examples: Sequence[PreferenceExample], fraction: float, *, seed: int = 0
) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """(train, held out): each prompt's pairs all on one side. With two or more
    prompts and a fraction above 0, at least one prompt is held out."""
    groups = sorted({e.pair.group for e in examples}, key=lambda g: _unit_hash(g, seed))
    if fraction <= 0 or len(groups) < 2:
        return list(examples), []
    held = set(groups[: max(1, round(fraction * len(groups)))])
    return [e for e in examples if e.pair.group not in held], [e for e in examples if e.pair.group in held]


def to_dataset(examples: Sequence[PreferenceExample], *, conversational: bool = True) -> Any:
    """A `datasets.Dataset` of prompt / chosen / rejected (and margin when any
    pair has one), as TRL's RewardTrainer and DPOTrainer read it."""
    from datasets import Dataset

    with_margin = any(e.pair.margin is not None for e in examples)
    rows: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
    if with_margin:
        rows["margin"] = []
    for example in examples:
        pair = example.pair
        rows["prompt"].append(_as_chat(pair.prompt, "user") if conversational else _as_plain(pair.prompt))
        rows["chosen"].append(_as_chat(pair.chosen, "assistant") if conversational else _as_plain(pair.chosen))
        rows["rejected"].append(_as_chat(pair.rejected, "assistant") if conversational else _as_plain(pair.rejected))
        if with_margin:
            rows["margin"].append(pair.margin or 0.0)
    return Dataset.from_dict(rows)


def _as_chat(text: Text, role: str) -> list[dict[str, str]]:
    if isinstance(text, str):
        return [{"role": role, "content": text}]
    return [{"role": m.role, "content": m.content} for m in text]


def _as_plain(text: Text) -> str:
    if isinstance(text, str):
        return text
    return "\n".join(m.content for m in text if isinstance(m, Message))


def stage_batch(ctx: StageContext, stage_name: str) -> int:
    source = ctx.resolve(f"stage:{stage_name}")
    manifest = Path(source.value) / "manifest.json"
    try:
        return int(json.loads(manifest.read_text(encoding="utf-8"))["batch_id"])
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(
            f"preferences: stage {stage_name!r} is not a rank or sample stage (no batch in {manifest})"
        ) from exc


def _file_examples(source: Source, spec: PreferenceDataSpec) -> list[PreferenceExample]:
    result = read_preference_source(source)
    who = f"import:{source_name(source)}"
    if result.unpaired:
        raise UserInputError(f"{result.path}: KTO data (completion + label) has no pairs; expected preference pairs")
    examples = [PreferenceExample(pair, who) for pair in result.pairs]
    for judgement in result.judgements:
        # Always the file: a row naming "alice" or "judge:demo" must not count as a person or a judge.
        # annotator_names may still pick rows by the name the file gives them.
        if spec.annotator_names and not {who, judgement.annotator} & set(spec.annotator_names):
            continue
        for pair in preference_pairs([judgement], ties=spec.ties, margin_per_rank=spec.margin_per_rank):
            examples.append(PreferenceExample(pair, who))
    return examples


def utc_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _unit_hash(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


__all__ = ["PreferenceData", "PreferenceExample", "load_preference_data", "split_by_prompt", "stage_batch",
           "to_dataset", "utc_time"]
