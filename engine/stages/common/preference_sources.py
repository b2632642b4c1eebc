"""Preference pairs from a file, a `datasets` folder or a hub dataset.

    result = read_preference_source(ctx.resolve("hub:Anthropic/hh-rlhf?subset=harmless-base"))
    result.pairs

A file is read by engine/feedback/importers.py (`read_feedback`: TRL pairs,
Anthropic HH dialogues, ranked lists, judgement tables; `.gz` too). The rows
of a datasets folder or a hub dataset (the split, subset and revision its
reference names; datasets_source.py) are read the same way by
`read_feedback_records`, the format told from the first row: TRL preference
datasets (prompt/chosen/rejected, plain or conversational, or chosen/rejected
conversations alone) and HH's chosen/rejected transcripts.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import StageFailed, UserInputError
from engine.feedback.importers import ImportResult, read_feedback, read_feedback_records
from engine.spec.data_refs import DataOptionError, parse_data_value
from engine.stages.common.context import Source
from engine.stages.common.datasets_source import dataset_rows, uses_datasets


def read_preference_source(source: Source) -> ImportResult:
    """Every record of a `path` or `hub` Source, or the errors of its bad
    rows (FeedbackFormatError) or of opening it (StageFailed)."""
    if source.kind not in ("path", "hub"):
        raise UserInputError(f"preferences: {source.kind}:{source.value} is not a file, a datasets folder or a "
                             "hub dataset")
    try:
        location, options = parse_data_value(source.kind, source.value)
    except DataOptionError as exc:
        raise StageFailed(f"{source.kind}:{source.value}: {exc}") from None
    if source.kind == "path" and not uses_datasets(Path(location), options):
        return read_feedback(location)
    label = location + options.render(source.kind, location)
    rows = dataset_rows(location, options, hub=source.kind == "hub")
    return read_feedback_records(rows, source=label)


def source_name(source: Source) -> str:
    """How imported pairs are attributed (`import:NAME`): a file's name, a
    folder's name or the hub id, with the part of it that was read."""
    location, options = parse_data_value(source.kind, source.value)
    name = Path(location).name if source.kind == "path" else location
    return name + options.render(source.kind, name)
