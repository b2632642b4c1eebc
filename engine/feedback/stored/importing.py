"""`rlhf prefs import`: a preference file into the store, all or nothing.

Each record becomes an item of a new batch named `import:FILE` with one
judgement: a TRL or HH pair as "A (chosen) better than B (rejected)", a
ranked list as its ranking, a judgement-table row as it was. The annotator is
always `import:FILE`, so imported feedback can be told from people's and
judges' everywhere: a file cannot make its rows count as a person's or a
judge's by naming one. The annotator a record names is kept beside it
(`source_annotator`).

The file is parsed completely before anything is written (a bad line names
the file and line and nothing is stored), and the store writes the whole
batch in one transaction.

Conversations are stored as readable text (`user: ...` turns) with the
messages kept in the prompt's and response's meta; a stage that needs the
exact turns can read the file directly (`preferences = ["file.jsonl"]`).
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserInputError
from engine.feedback.importers import ImportFormat, ImportResult, read_feedback
from engine.feedback.records import Text, text_to_json
from store import ImportedItem, ImportedResponse, Store


def import_file(store: Store, path: str | Path, *, format: ImportFormat = "auto",
                name: str | None = None) -> tuple[int, ImportResult]:
    """Import `path`; returns (batch id, what the file held)."""
    result = read_feedback(path, format=format)
    batch_name = name or f"import:{Path(path).name}"
    items = imported_items(result, default_annotator=f"import:{Path(path).name}")
    if not items:
        raise UserInputError(f"{path}: {result.format} data has no judgements to store (KTO rows have no pairs)")
    batch_id = store.feedback.import_batch(
        name=batch_name, settings={"imported_from": str(Path(path).resolve()), "format": result.format},
        items=items,
    )
    return batch_id, result


def imported_items(result: ImportResult, *, default_annotator: str) -> list[ImportedItem]:
    items = [
        ImportedItem(
            prompt=_text(pair.prompt), prompt_meta=_meta(pair.prompt),
            responses=(_response(pair.chosen, None), _response(pair.rejected, None)),
            outcome="a_better", annotator=default_annotator, ranking=(0, 1),
        )
        for pair in result.pairs
    ]
    for judgement in result.judgements:
        if judgement.outcome == "ranking":
            ranking = tuple(tier[0] if len(tier) == 1 else tuple(tier) for tier in judgement.ranking or ())
        else:
            ranking = {"a_better": (0, 1), "b_better": (1, 0)}.get(judgement.outcome, ())
        items.append(ImportedItem(
            prompt=_text(judgement.prompt), prompt_meta=_meta(judgement.prompt),
            responses=tuple(_response(r.text, r.model) for r in judgement.responses),
            outcome=judgement.outcome, annotator=default_annotator, ranking=ranking,
            source_annotator=judgement.annotator,
        ))
    return items


def _text(text: Text) -> str:
    if isinstance(text, str):
        return text
    return "\n\n".join(f"{m.role}: {m.content}" for m in text)


def _meta(text: Text) -> dict[str, object]:
    return {} if isinstance(text, str) else {"messages": text_to_json(text)}


def _response(text: Text, model: str | None) -> ImportedResponse:
    return ImportedResponse(text=_text(text), model=model, meta={"imported": True, **_meta(text)})
