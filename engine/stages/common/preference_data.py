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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import UserInputError
from engine.feedback.pairs import preference_pairs
from engine.feedback.records import Judgement, Message, PreferencePair, Text
from engine.feedback.stored.selection import Selection, selected_judgements
from engine.stages.common.context import Source, StageContext
from engine.stages.common.preference_sources import read_preference_source, source_name
from engine.stages.common.preference_spec import PreferenceDataSpec


@dataclass(frozen=True)
class PreferenceExample:
    """A pair with who judged it (`import:FILE` for a file's pairs)."""

    pair: PreferencePair
    annotator: str


#: what a split by prompt sorts: pairs here, KTO's verdicts in unpaired_feedback.py
Grouped = TypeVar("Grouped")


@dataclass(frozen=True)
class PreferenceData:
    train: list[PreferenceExample]
    eval: list[PreferenceExample]
    #: what was read, for the stage's resolved config and log
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_margins(self) -> bool:
        return any(e.pair.margin is not None for e in self.train + self.eval)


@dataclass(frozen=True)
class SelectedSources:
    """What a spec's `preferences` and `batches` name, read as far as the store
    goes: the batches (those named, and those of the rank or sample stages
    named), the judgements the annotator selection picks in them, and the
    files, datasets folders and hub datasets still to read."""

    batch_refs: list[str]
    judgements: list[Judgement]
    files: list[str]  # canonical references


def select_sources(ctx: StageContext, spec: PreferenceDataSpec) -> SelectedSources:
    """The batches and their selected judgements, and the files (see `SelectedSources`):
    what the pair-reading stages and kto read alike."""
    batch_refs = list(spec.batches)
    files: list[str] = []
    for source in spec.preference_sources:
        scheme, _, value = source.partition(":")
        if scheme == "stage":
            batch_refs.append(str(stage_batch(ctx, value)))
        else:
            files.append(source)
    judgements: list[Judgement] = []
    if batch_refs:
        selection = Selection(
            batches=tuple(batch_refs), annotators=spec.annotators, names=tuple(spec.annotator_names),
            since=utc_time(spec.since), until=utc_time(spec.until), min_gold_accuracy=spec.min_gold_accuracy,
        )
        judgements = selected_judgements(ctx.store, selection)
    return SelectedSources(batch_refs=batch_refs, judgements=judgements, files=files)


def file_judgements(judgements: Sequence[Judgement], who: str, spec: PreferenceDataSpec) -> list[Judgement]:
    """A file's judgement rows that annotator_names picks (all without names).
    A row counts as the file's (`who`), whatever annotator it names: a row
    naming "alice" or "judge:demo" must not count as a person or a judge;
    annotator_names may still pick rows by the name the file gives them."""
    if not spec.annotator_names:
        return list(judgements)
    return [j for j in judgements if {who, j.annotator} & set(spec.annotator_names)]


def load_preference_data(ctx: StageContext, spec: PreferenceDataSpec) -> PreferenceData:
    examples: list[PreferenceExample] = []
    selected = select_sources(ctx, spec)
    batch_refs, files = selected.batch_refs, selected.files
    for judgement in selected.judgements:
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
    return split_by_group(examples, lambda e: e.pair.group, fraction, seed=seed)


def split_by_group(items: Sequence[Grouped], group: Callable[[Grouped], str], fraction: float, *,
                   seed: int = 0) -> tuple[list[Grouped], list[Grouped]]:
    """(train, held out), each group (a prompt) all on one side. Which side
    a group falls on depends only on its key and the seed, so adding data
    later does not move groups already split, and the pair and KTO kinds
    hold out the same prompts for the same seed."""
    groups = sorted({group(item) for item in items}, key=lambda g: _unit_hash(g, seed))
    if fraction <= 0 or len(groups) < 2:
        return list(items), []
    held = set(groups[: max(1, round(fraction * len(groups)))])
    return [i for i in items if group(i) not in held], [i for i in items if group(i) in held]


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
    for judgement in file_judgements(result.judgements, who, spec):
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


__all__ = ["PreferenceData", "PreferenceExample", "SelectedSources", "file_judgements", "load_preference_data",
           "select_sources", "split_by_group", "split_by_prompt", "stage_batch", "to_dataset", "utc_time"]
