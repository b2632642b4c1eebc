"""The model card of a checkpoint: a README.md the hub shows, written from the store.

    text = build_card(Path("rlhf-workspace/runs/00003/dpo/final"), engine.reads)
    write_card(folder, text)

The card opens with the hub's YAML metadata (base_model, library_name,
tags with rlhf-console and the stage kinds, datasets that are hub ids, the
base model's license where its cached card names one), rendered by
huggingface_hub's own ModelCardData. The body says what made the weights:
the base model and the revision it loaded (from the folder's provenance
record, engine/recipe/provenance.py), the stages of the run that led to this
checkpoint with their key settings, data and metrics, the runs before it when
the model started from another run's checkpoint, and the run's pipeline spec.

Text from the store (names, references, the spec) goes in literally: inline
values in a code span, the spec in a fenced block, each with a backtick run
longer than any inside it, so nothing in them can end the span or the fence.
Torch-free: `rlhf export` and `rlhf push` write it from the console's side.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.recipe.provenance import chain, describe_source, read_provenance, root_source
from engine.recipe.report import HEADLINES
from store import StoreError

if TYPE_CHECKING:
    from store import RunRead, StageRead
    from store.reads import StoreReader

CARD_FILE = "README.md"
#: the first line of every card written here: a card without it is someone else's and is left alone
MARKER = "<!-- model card written by rlhf-console from its store; `rlhf push` and `rlhf export` rewrite it -->"
#: the settings a reader wants first, in this order, where the stage has them
KEY_SETTINGS = ("max_steps", "learning_rate", "batch_size", "gradient_accumulation_steps", "max_length",
                "block_size", "beta", "loss_type", "ppo_epochs", "rollout_batch_size", "num_generations",
                "target_kl", "lora", "quantization", "precision", "seed")
#: metrics every training stage may log, besides the report's headlines for its kind
COMMON_METRICS = (("final training loss", "train/loss", "last"),)
_HUB_DATA = re.compile(r"hub:([^@?]+)")
#: what huggingface_hub's model card template says where nothing was filled in (peft writes it untouched)
_BLANK_TEMPLATE_TITLE = "# Model Card for Model ID"
_BLANK_FIELD = "[More Information Needed]"
#: a card's YAML metadata block, and its top-level license (a plain SPDX-like id such as apache-2.0)
_FRONT_MATTER = re.compile(r"---\s*\n(.*?)\n---\s*(?:\n|$)", re.DOTALL)
_LICENSE = re.compile(r"^license:\s*(['\"]?[\w.+-]+['\"]?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class CardSource:
    """What a card is written from: the folder's provenance record, and the
    run and stage of the store that wrote it (None where unknown)."""

    folder: Path
    record: Mapping[str, Any] | None
    run: RunRead | None
    stage: StageRead | None

    @property
    def known(self) -> bool:
        """Whether anything says how the folder was trained (a card is worth writing)."""
        return self.record is not None or self.stage is not None


def build_card(folder: Path, store: StoreReader | None, *, title: str | None = None) -> str:
    """The card of the checkpoint `folder` (README.md text). `store`: the
    workspace's, to find the run and stage that wrote it; without it, or
    when it does not know the folder, the card says what the folder's
    provenance record says."""
    return render_card(find_card_source(folder, store), store, title=title)


def find_card_source(folder: Path, store: StoreReader | None) -> CardSource:
    """The provenance record of `folder` (or of the stage folder a LoRA
    `adapter/` sits in) and the stage it names; failing that, the stage whose
    checkpoint the store lists at this path (a Trainer's checkpoint-STEP,
    with the record of the stage's final model where it has one)."""
    folder = folder.resolve()
    record = read_provenance(folder)
    if record is None and folder.name == "adapter":
        record = read_provenance(folder.parent)
    run = stage = None
    if store is not None:
        run, stage = _named_stage(store, record) if record is not None else (None, None)
        if stage is None:
            run, stage = _stage_by_path(store, folder)
        if record is None and stage is not None and stage.output_path:
            # A Trainer's checkpoint-STEP has no record of its own; its stage's final/ names the same source.
            record = read_provenance(Path(stage.output_path))
    return CardSource(folder=folder, record=record, run=run, stage=stage)


def write_card(folder: Path, text: str) -> Path | None:
    """Write `text` as the folder's README.md, through a temporary file
    renamed into place. A README.md someone else wrote (without our marker)
    is kept: None then."""
    target = folder / CARD_FILE
    if target.exists():
        try:
            existing = target.read_text(encoding="utf-8", errors="replace")
        except OSError:
            existing = ""
        if not is_ours(existing):
            return None
    tmp = folder / f".{CARD_FILE}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half card behind
        raise
    return target


def is_ours(text: str) -> bool:
    """Whether a README.md is a card this module wrote (or an empty one), which a newer card replaces.
    So is the hub's blank template that peft writes beside an adapter (its title still the template's
    "Model ID", its fields "[More Information Needed]"); a card someone has given a title is theirs."""
    return not text.strip() or MARKER in text or (_BLANK_TEMPLATE_TITLE in text and _BLANK_FIELD in text)


# --- rendering ----------------------------------------------------------------


def render_card(found: CardSource, store: StoreReader | None, *, title: str | None = None) -> str:
    """The card's text; `title` (a repo id) heads it, else the run and stage, else the folder's name."""
    record, run, stage = found.record, found.run, found.stage
    lineage = _lineage(run, stage, store)
    base = root_source(record)
    if base is None and stage is not None and run is not None:
        base = _declared_source(run, stage)
    # The kinds of every stage that made the weights: earlier runs' (from the record) first.
    recorded = [str(link["stage"].get("kind")) for link in chain(record) if isinstance(link.get("stage"), Mapping)]
    kinds = list(dict.fromkeys([*recorded[::-1], *(s.kind for s in lineage)]))
    datasets = sorted({m.group(1) for s in lineage for ref in _data_refs(run, s) if (m := _HUB_DATA.match(ref))})

    metadata = _metadata(base, kinds, datasets)
    heading = _code(title) if title else _title(found)
    lines = [f"---\n{metadata}\n---", "", MARKER, "", f"# {heading}", ""]
    lines += _intro(run, stage, record)
    lines += ["", "## Base model", "", *_base_lines(base, record)]
    earlier = _earlier_runs(record)
    if earlier:
        lines += ["", "## Earlier runs it started from", "", *earlier]
    if lineage and run is not None:
        summaries = _summaries(store, run)
        lines += ["", f"## Stages of run {_code(run.name)} that led to this checkpoint", ""]
        for each in lineage:
            lines += _stage_lines(run, each, summaries.get(each.id, {}))
    if run is not None:
        lines += ["## Pipeline spec", ""]
        if run.spec_text.strip():
            fence = "`" * max(3, _longest_run(run.spec_text, "`") + 1)
            lines += [f"{fence}toml", run.spec_text.rstrip("\n"), fence]
        else:
            lines.append("The run recorded no spec text (it was submitted from code).")
    return "\n".join(lines).rstrip("\n") + "\n"


def _metadata(base: Mapping[str, Any] | None, kinds: list[str], datasets: list[str]) -> str:
    from huggingface_hub import ModelCardData  # torch-free, installed with transformers

    hub_base = base is not None and base.get("kind") == "hub"
    data = ModelCardData(
        base_model=str(base["id"]) if hub_base and base is not None else None,
        library_name="transformers",
        license=_license(base) if hub_base and base is not None else None,
        tags=["rlhf-console", *kinds],
        datasets=datasets or None,
    )
    return data.to_yaml()


def _intro(run: RunRead | None, stage: StageRead | None, record: Mapping[str, Any] | None) -> list[str]:
    if run is not None and stage is not None:
        return [f"The output of stage {_code(stage.name)} ({_code(stage.kind)}) of run {_code(run.name)} "
                f"(run {run.id}, {run.status.value}), trained with rlhf-console."]
    if record is not None and isinstance(record.get("stage"), Mapping) and isinstance(record.get("run"), Mapping):
        return [f"The output of stage {_code(str(record['stage'].get('name')))} of run "
                f"{_code(str(record['run'].get('name')))}, trained with rlhf-console; the workspace this card was "
                "written in does not hold that run, so only the provenance record is shown."]
    return ["No record of how these weights were trained was found: the folder has no rlhf_provenance.json "
            "and the workspace's store does not know it."]


def _base_lines(base: Mapping[str, Any] | None, record: Mapping[str, Any] | None) -> list[str]:
    if base is None:
        return ["Unknown."]
    kind = base.get("kind")
    if kind == "hub":
        revision = base.get("revision")
        at = f"at revision {_code(str(revision))}" if revision else "(its revision was not resolved)"
        line = f"- {_code(str(base.get('id')))} from the Hugging Face hub, {at}"
    elif kind == "builtin":
        line = f"- none: a randomly initialised built-in preset, {_code(str(base.get('name')))}"
    else:
        line = f"- a local folder, {_code(describe_source(base))}"
    return [line] if record is not None else [line + " (as the run's spec names it; no provenance record)"]


def _earlier_runs(record: Mapping[str, Any] | None) -> list[str]:
    """The checkpoints of other runs this one started from, nearest first."""
    links = list(chain(record))
    this_run = links[0].get("run") if links else None
    lines = []
    for link in links[1:]:
        run, stage = link.get("run"), link.get("stage")
        if isinstance(run, Mapping) and isinstance(stage, Mapping) and run != this_run:
            lines.append(f"- stage {_code(str(stage.get('name')))} ({_code(str(stage.get('kind')))}) of run "
                         f"{_code(str(run.get('name')))} (run {_code(str(run.get('id')))}), from "
                         f"{_code(describe_source(link.get('source')))}")
    return lines


def _stage_lines(run: RunRead, stage: StageRead, metrics: Mapping[str, Any]) -> list[str]:
    table = _table(run, stage)
    lines = [f"### {_code(stage.name)} ({_code(stage.kind)}, {stage.status.value})", ""]
    if "from" in table and table["from"] is not None:
        lines.append(f"- from: {_code(_value(table['from']))}")
    settings = [f"{key} = {_value(table[key])}" for key in KEY_SETTINGS if table.get(key) is not None]
    if settings:
        lines.append(f"- settings: {_code('; '.join(settings))}")
    data = _data_refs(run, stage)
    if data:
        lines.append(f"- data: {', '.join(_code(ref) for ref in data)}")
    shown = []
    for label, key, how in (*HEADLINES.get(stage.kind, ()), *COMMON_METRICS):
        summary = metrics.get(key)
        if summary is None:
            continue
        last = _number(summary.last)
        value = f"{_number(summary.first)} → {last}" if how == "first_last" and summary.count > 1 else last
        shown.append(f"{label} ({_code(key)}): {value}")
    lines.append("- metrics: " + ("; ".join(shown) if shown else "none recorded"))
    return [*lines, ""]


# --- reading the store ------------------------------------------------------------


def _named_stage(store: StoreReader, record: Mapping[str, Any]) -> tuple[RunRead | None, StageRead | None]:
    """The run and stage a provenance record names, if this store holds them
    (same id and name: a record from another workspace names nothing here)."""
    run_info, stage_info = record.get("run"), record.get("stage")
    if not isinstance(run_info, Mapping) or not isinstance(stage_info, Mapping):
        return None, None
    try:
        run = store.get_run(int(run_info["id"]))
    except (StoreError, KeyError, TypeError, ValueError):
        return None, None
    if run.name != run_info.get("name"):
        return None, None
    stage = next((s for s in store.list_stages(run_id=run.id)
                  if s.id == stage_info.get("id") and s.name == stage_info.get("name")), None)
    return (run, stage) if stage is not None else (None, None)


def _stage_by_path(store: StoreReader, folder: Path) -> tuple[RunRead | None, StageRead | None]:
    wanted = {str(folder)} | ({str(folder.parent)} if folder.name == "adapter" else set())
    for checkpoint in reversed(store.list_checkpoints()):
        if str(Path(checkpoint.path).resolve()) in wanted:
            run = store.get_run(checkpoint.run_id)
            stage = next((s for s in store.list_stages(run_id=run.id) if s.id == checkpoint.stage_id), None)
            if stage is not None:
                return run, stage
    return None, None


def _lineage(run: RunRead | None, stage: StageRead | None, store: StoreReader | None) -> list[StageRead]:
    """`stage` and every stage of its run it read the output of, directly or
    through others (its `from`, a reward model, a batch of samples), in run order."""
    if run is None or stage is None or store is None:
        return []
    stages = {s.name: s for s in store.list_stages(run_id=run.id)}
    wanted, todo = set(), [stage.name]
    while todo:
        name = todo.pop()
        if name in wanted or name not in stages:
            continue
        wanted.add(name)
        todo += [ref.removeprefix("stage:") for ref in _references(_table(run, stages[name]))
                 if ref.startswith("stage:")]
    return sorted((stages[n] for n in wanted), key=lambda s: s.position)


def _summaries(store: StoreReader | None, run: RunRead) -> dict[int, dict[str, Any]]:
    by_stage: dict[int, dict[str, Any]] = {}
    if store is not None:
        for summary in store.metric_summaries(run_id=run.id):
            by_stage.setdefault(summary.stage_id, {})[summary.key] = summary
    return by_stage


def _table(run: RunRead, stage: StageRead) -> Mapping[str, Any]:
    """The stage's table as submitted (its stored config is replaced by what it resolved when it ran)."""
    tables = run.spec.get("stages", {}) if isinstance(run.spec, Mapping) else {}
    table = tables.get(stage.name) if isinstance(tables, Mapping) else None
    return table if isinstance(table, Mapping) else {}


def _declared_source(run: RunRead, stage: StageRead) -> Mapping[str, Any] | None:
    """Without a provenance record: the `from` the spec names (no revision)."""
    reference = _table(run, stage).get("from")
    if not isinstance(reference, str) or ":" not in reference:
        return None
    scheme, _, value = reference.partition(":")
    if scheme == "hub":
        return {"kind": "hub", "id": value, "revision": None}
    if scheme == "builtin":
        return {"kind": "builtin", "name": value}
    return {"kind": "path", "path": value} if scheme == "path" else None


def _data_refs(run: RunRead | None, stage: StageRead) -> list[str]:
    """The data a stage read: its reference fields of the data section, as stored (canonical)."""
    if run is None:
        return []
    from engine.stages.registry import stage_kind

    table = _table(run, stage)
    kind = stage_kind(stage.kind)
    fields = kind.spec.reference_fields if kind is not None else {}
    refs = []
    for name, section in fields.items():
        if section == "data":
            refs += [ref for ref in _references(table.get(name)) if not ref.startswith("stage:")]
    return list(dict.fromkeys(refs))


def _references(value: Any) -> Iterable[str]:
    """Every canonical reference string in a stage table's value (nested tables and arrays too)."""
    if isinstance(value, str):
        if value.partition(":")[0] in ("stage", "builtin", "path", "hub"):
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _references(item)


def _license(base: Mapping[str, Any]) -> str | None:
    """The license the base model's own card names in its metadata, if that
    card is in the local hub cache (nothing is downloaded for it)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        # A record copied from elsewhere may name an id the hub would refuse (HFValidationError, a ValueError).
        path = try_to_load_from_cache(str(base["id"]), CARD_FILE, revision=base.get("revision") or None)
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace") if isinstance(path, str) else ""
    except (OSError, ValueError):
        return None
    header = _FRONT_MATTER.match(text)
    found = _LICENSE.search(header.group(1)) if header else None
    return found.group(1).strip("'\"") if found else None


# --- text ------------------------------------------------------------------------


def _title(found: CardSource) -> str:
    """The heading: run and stage, else the folder's name (code spans: names are shown literally)."""
    if found.run is not None and found.stage is not None:
        return f"{_code(found.run.name)} / {_code(found.stage.name)}"
    return _code(found.folder.name)


def _code(text: str) -> str:
    """`text` as a Markdown code span, literal whatever it holds: the span's
    backtick run is longer than any inside, and a space pads a backtick at
    either end (CommonMark strips one space each side)."""
    text = " ".join(text.splitlines())  # a code span cannot hold a blank line
    ticks = "`" * (_longest_run(text, "`") + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _longest_run(text: str, char: str) -> int:
    return max((len(m.group(0)) for m in re.finditer(re.escape(char) + "+", text)), default=0)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and "r" in value:  # a LoRA table: its rank and scale say enough here
        return json.dumps({k: value[k] for k in ("r", "alpha") if k in value}, sort_keys=True)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _number(value: float) -> str:
    return f"{value:.4g}"


__all__ = ["CARD_FILE", "MARKER", "CardSource", "build_card", "find_card_source", "is_ours", "render_card",
           "write_card"]
