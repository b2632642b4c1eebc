"""Model cards and provenance (#15 item 4): the card is written from the store
(base model and revision, the stages that led to the checkpoint, their data
and metrics, the spec), read back by huggingface_hub's and markdown-it's own
readers; a stage records the hub commit it loaded, found offline in a hub
cache laid out as huggingface_hub lays it out."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from engine.recipe import provenance
from engine.recipe.model_card import MARKER, build_card, find_card_source, write_card
from engine.recipe.provenance import PROVENANCE_FILE, hub_commit, read_provenance, root_source, write_provenance
from store import NewStage, Store
from store.reads import StoreReader

SHA = "0123456789abcdef0123456789abcdef01234567"
#: a spec whose text holds backtick runs, which must not end the card's fence
SPEC_TEXT = '''name = "tiny"
# a comment with ``` and ```` inside, and `code`

[stages.pretrain]
kind = "pretrain"
from = "tiny-org/base"

[stages.sft]
kind = "sft"
from = "pretrain"
data = "HuggingFaceH4/ultrachat_200k@main?split=train_sft"
'''


def fences(text: str) -> list[tuple[str, str]]:
    """(info, content) of every fenced block, as a CommonMark parser reads them."""
    return [(t.info, t.content) for t in MarkdownIt().parse(text) if t.type == "fence"]


def code_spans(text: str) -> list[str]:
    return [child.content for t in MarkdownIt().parse(text) if t.type == "inline"
            for child in t.children or [] if child.type == "code_inline"]


def a_run(store: Store, tmp_path: Path) -> tuple[int, dict[str, int], Path]:
    """A finished two-stage run (pretrain from a hub model, then sft on a hub
    dataset) and a third stage that is not in sft's lineage; sft's final/
    folder with its provenance record, as saving.py writes it."""
    tables = {
        "pretrain": {"kind": "pretrain", "from": "hub:tiny-org/base", "max_steps": 30, "learning_rate": 0.001,
                     "data": "builtin:stdlib-docs"},
        "sft": {"kind": "sft", "from": "stage:pretrain", "max_steps": 20, "learning_rate": 0.0005, "batch_size": 4,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                "data": "hub:HuggingFaceH4/ultrachat_200k@main?split=train_sft", "eval_prompts": None},
        "other": {"kind": "sample", "from": "hub:tiny-org/base", "prompts": "path:/data/other.jsonl"},
    }
    run = store.create_run(name="tiny `run`", spec_text=SPEC_TEXT, spec={"name": "tiny", "stages": tables},
                           spec_path=None,
                           stages=[NewStage(name=n, kind=t["kind"], position=i, parent=None, config={})
                                   for i, (n, t) in enumerate(tables.items())])
    ids = {s.name: s.id for s in store.list_stages(run_id=run.id)}
    folders = {}
    for name in ("pretrain", "sft"):
        folder = tmp_path / name / "final"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
        folders[name] = folder
        store.add_checkpoint(run_id=run.id, stage_id=ids[name], step=30, path=str(folder), is_final=True)
    pretrain_record = {"format": 1, "written_by": "rlhf-console", "run": {"id": run.id, "name": run.name},
                       "stage": {"id": ids["pretrain"], "name": "pretrain", "kind": "pretrain"},
                       "source": {"kind": "hub", "id": "tiny-org/base", "revision": SHA}}
    write_provenance(folders["pretrain"], pretrain_record)
    write_provenance(folders["sft"], {
        "format": 1, "written_by": "rlhf-console", "run": {"id": run.id, "name": run.name},
        "stage": {"id": ids["sft"], "name": "sft", "kind": "sft"},
        "source": provenance.source_record("path", str(folders["pretrain"])),
    })
    metrics = [("pretrain", "eval/loss", 0, 8.3), ("pretrain", "eval/loss", 30, 4.25),
               ("sft", "eval/loss", 0, 3.5), ("sft", "eval/loss", 20, 1.75), ("sft", "train/loss", 20, 1.5),
               ("other", "sample/finished_fraction", 0, 0.5)]
    store.add_metrics([{"run_id": run.id, "stage_id": ids[s], "key": k, "step": step, "value": v, "wall_time": 0.0}
                       for s, k, step, v in metrics])
    return run.id, ids, folders["sft"]


def test_card_names_base_revision_stages_data_metrics_and_the_spec(store: Store, tmp_path: Path) -> None:
    _, _, folder = a_run(store, tmp_path)
    reader: StoreReader = store
    text = build_card(folder, reader)

    data = ModelCard(text).data  # the hub's own reader of the metadata header
    assert data.base_model == "tiny-org/base"
    assert data.library_name == "transformers"
    assert data.tags == ["rlhf-console", "pretrain", "sft"]
    assert data.datasets == ["HuggingFaceH4/ultrachat_200k"]

    spans = code_spans(text)
    assert "tiny-org/base" in spans and SHA in spans  # base model and the commit it loaded
    assert "tiny `run`" in spans  # a name holding a backtick, shown literally
    assert "## Stages of run" in text
    assert "### `pretrain` (`pretrain`" in text and "### `sft` (`sft`" in text
    assert "other" not in {s for s in spans}  # not in the lineage of sft
    assert "hub:HuggingFaceH4/ultrachat_200k@main?split=train_sft" in spans
    assert "max_steps = 20; learning_rate = 0.0005; batch_size = 4; lora = {\"alpha\": 16, \"r\": 8}" in spans
    assert "held-out loss (`eval/loss`): 8.3 → 4.25" in text
    assert "held-out loss (`eval/loss`): 3.5 → 1.75" in text
    assert "final training loss (`train/loss`): 1.5" in text
    # The spec in a fence no backtick run inside can close, read back whole.
    assert fences(text) == [("toml", SPEC_TEXT)]
    assert text.splitlines()[text.splitlines().index(MARKER) - 2] == "---"


def test_a_folder_known_only_by_its_checkpoint_row_gets_the_spec_source(store: Store, tmp_path: Path) -> None:
    run_id, ids, _ = a_run(store, tmp_path)
    checkpoint = tmp_path / "pretrain" / "checkpoints" / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    store.add_checkpoint(run_id=run_id, stage_id=ids["pretrain"], step=10, path=str(checkpoint))

    found = find_card_source(checkpoint, store)
    assert found.record is None and found.stage is not None and found.stage.name == "pretrain"
    text = build_card(checkpoint, store, title="my-org/tiny")
    assert ModelCard(text).data.base_model == "tiny-org/base"
    assert "(its revision was not resolved)" in text and "no provenance record" in text
    assert text.count("### ") == 1 and "# `my-org/tiny`" in text

    # Once the stage has finished, its final/ record names the source and commit for its checkpoints too.
    store.update_stage(ids["pretrain"], output_path=str(tmp_path / "pretrain" / "final"))
    found = find_card_source(checkpoint, store)
    assert found.record is not None and found.record["stage"]["name"] == "pretrain"
    assert SHA in code_spans(build_card(checkpoint, store))


def test_without_a_store_the_record_still_names_the_chain(tmp_path: Path, store: Store) -> None:
    _, _, folder = a_run(store, tmp_path)
    text = build_card(folder, None)
    assert ModelCard(text).data.base_model == "tiny-org/base"
    assert SHA in code_spans(text)
    assert "## Earlier runs" not in text  # the same run: no earlier run to name
    assert not fences(text)  # no store, no spec


def test_provenance_chains_back_to_the_hub_model(store: Store, tmp_path: Path) -> None:
    _, _, folder = a_run(store, tmp_path)
    record = read_provenance(folder)
    assert record is not None
    assert root_source(record) == {"kind": "hub", "id": "tiny-org/base", "revision": SHA}
    (folder / PROVENANCE_FILE).write_text("{not json")
    assert read_provenance(folder) is None  # a damaged record is none, not a crash


def test_a_readme_someone_else_wrote_is_kept(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# my own card\n")
    assert write_card(tmp_path, f"{MARKER}\nnew") is None
    assert (tmp_path / "README.md").read_text() == "# my own card\n"
    (tmp_path / "README.md").write_text(f"old\n{MARKER}\n")
    assert write_card(tmp_path, f"{MARKER}\nnew") == tmp_path / "README.md"
    assert (tmp_path / "README.md").read_text() == f"{MARKER}\nnew"
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_peft_s_blank_template_is_replaced_but_a_card_someone_began_is_kept(tmp_path: Path) -> None:
    from huggingface_hub import ModelCardData

    blank = str(ModelCard.from_template(ModelCardData(library_name="peft")))  # as peft writes it beside an adapter
    (tmp_path / "README.md").write_text(blank)
    assert write_card(tmp_path, f"{MARKER}\nnew") == tmp_path / "README.md"
    begun = blank.replace("# Model Card for Model ID", "# Model Card for my-org/helpful-sft")
    (tmp_path / "README.md").write_text(begun)  # titled, some fields still "[More Information Needed]"
    assert write_card(tmp_path, f"{MARKER}\nnew") is None
    assert (tmp_path / "README.md").read_text() == begun


def fake_hub_cache(cache: Path, repo_id: str, commit: str) -> Path:
    """A hub cache holding one model repo as huggingface_hub lays it out:
    models--ORG--NAME/refs/main naming the commit, the files under snapshots/COMMIT."""
    from tests.tiny_models import save_tiny_model

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = save_tiny_model(repo / "snapshots" / commit)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# base\n")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(provenance, "_commits", {})
    return cache


def test_a_hub_model_loads_at_the_commit_its_branch_names_offline(hub_cache: Path) -> None:
    from transformers import AutoTokenizer

    from engine.stages.common.context import Source
    from engine.stages.common.models import load_model_for_training

    fake_hub_cache(hub_cache, "tiny-org/base", SHA)
    assert hub_commit("tiny-org/base") == SHA
    assert hub_commit("tiny-org/absent") is None
    (hub_cache / "models--tiny-org--absent" / "refs").mkdir(parents=True)
    (hub_cache / "models--tiny-org--absent" / "refs" / "main").write_text(SHA)
    assert hub_commit("tiny-org/absent") is None  # the process's first answer: what its load used, saved as such
    tokenizer = AutoTokenizer.from_pretrained("tiny-org/base")
    model = load_model_for_training(Source("hub", "tiny-org/base"), tokenizer, seed=0)
    assert model.config.num_hidden_layers == 2
    # The base model's license, read from its card in the cache, goes into the card's metadata.
    folder = hub_cache.parent / "trained"
    folder.mkdir()
    write_provenance(folder, {"format": 1, "written_by": "rlhf-console",
                              "source": {"kind": "hub", "id": "tiny-org/base", "revision": SHA}})
    assert ModelCard(build_card(folder, None)).data.license == "apache-2.0"
    # A record naming an id the hub would refuse still gets its card (without a license).
    write_provenance(folder, {"format": 1, "written_by": "rlhf-console",
                              "source": {"kind": "hub", "id": "not a/valid id", "revision": SHA}})
    assert ModelCard(build_card(folder, None)).data.license is None


@pytest.mark.slow
def test_a_real_sft_stage_records_its_hub_source_and_its_card_says_so(
    hub_cache: Path, tmp_path: Path, workspace, builtin_cache: Path,
) -> None:
    """A pipeline's SFT stage from a hub model (in a fake offline cache), a few
    steps: final/ holds the record (hub id and commit), the store the
    SourceModel event; the card names base, revision, stage, data, metrics and
    the spec; the folder still loads with plain transformers."""
    from transformers import AutoModelForCausalLM

    from engine import Engine
    from engine.spec.pipeline import parse_spec
    from engine.stages.common.context import StageContext
    from engine.stages.sft import stage as sft
    from engine.stages.sft.spec import SFTSpec
    from store import StageStatus

    fake_hub_cache(hub_cache, "tiny-org/base", SHA)
    data = tmp_path / "answers.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "completion": f"{i} {i}"}) + "\n" for i in range(40)))
    text = (f'name = "card-test"\n\n[stages.sft]\nkind = "sft"\nfrom = "tiny-org/base"\ndata = "{data}"\n'
            "max_steps = 2\nbatch_size = 2\nlearning_rate = 1e-3\nmax_length = 32\neval_every = 2\n"
            "eval_batches = 1\nsample_every = 100\neval_prompt_count = 1\nsave_every = 100\n")
    spec = parse_spec(text, source=str(tmp_path / "pipeline.toml"), base_dir=tmp_path)
    engine = Engine(workspace)
    run = asyncio.run(engine.submit(spec, start=False))
    stage = workspace.store.list_stages(run_id=run.id)[0]
    stage_spec = spec.stages["sft"]
    assert isinstance(stage_spec, SFTSpec)
    ctx = StageContext(store=workspace.store, run_id=run.id, stage_id=stage.id, stage_name="sft", spec=stage_spec,
                       output_dir=workspace.stage_dir(run.id, "sft"), cache_dir=builtin_cache, stage_outputs={})
    sft.run(ctx)
    workspace.store.update_stage(stage.id, status=StageStatus.SUCCEEDED, output_path=str(ctx.final_dir))

    record = read_provenance(ctx.final_dir)
    assert record is not None and record["source"] == {"kind": "hub", "id": "tiny-org/base", "revision": SHA}
    assert record["stage"] == {"id": stage.id, "name": "sft", "kind": "sft"}
    events = [e for e in workspace.store.events_since(run_id=run.id) if e.kind == "SourceModel"]
    assert [e.data for e in events] == [record["source"]] and events[0].stage_id == stage.id

    card = build_card(ctx.final_dir, workspace.store)
    meta = ModelCard(card).data
    assert (meta.base_model, meta.license, meta.tags) == ("tiny-org/base", "apache-2.0", ["rlhf-console", "sft"])
    spans = code_spans(card)
    assert {"tiny-org/base", SHA, "sft", f"path:{data}"} <= set(spans)
    assert "held-out loss (`eval/loss`): " in card and "final training loss (`train/loss`): " in card
    assert fences(card) == [("toml", text)]
    loaded = AutoModelForCausalLM.from_pretrained(ctx.final_dir)  # our extra file does not disturb transformers
    assert loaded.config.num_hidden_layers == 2


def test_a_checkpoint_of_another_run_is_named_with_that_run(tmp_path: Path) -> None:
    older, newer = tmp_path / "older", tmp_path / "newer"
    for folder in (older, newer):
        folder.mkdir()
    write_provenance(older, {"format": 1, "written_by": "rlhf-console", "run": {"id": 4, "name": "first"},
                             "stage": {"id": 7, "name": "sft", "kind": "sft"},
                             "source": {"kind": "builtin", "name": "llama-4m"}})
    write_provenance(newer, {"format": 1, "written_by": "rlhf-console", "run": {"id": 9, "name": "second"},
                             "stage": {"id": 30, "name": "dpo", "kind": "dpo"},
                             "source": provenance.source_record("path", str(older))})
    text = build_card(newer, None)
    meta = ModelCard(text).data
    assert meta.base_model is None and meta.tags == ["rlhf-console", "sft", "dpo"]
    assert "## Earlier runs it started from" in text
    assert {"sft", "first", "4", "llama-4m", "dpo", "second"} <= set(code_spans(text))
    assert "randomly initialised built-in preset" in text


def test_an_export_carries_the_record_and_gets_the_card(store: Store, tmp_path: Path) -> None:
    """The child's export (in process here) copies the provenance record; the
    front writes the card from it and the store. The folder still loads."""
    from transformers import AutoModelForCausalLM

    from engine.runtime.export_job import write_export_card
    from engine.stages.common.export_weights import export
    from tests.tiny_models import save_tiny_model

    _, _, folder = a_run(store, tmp_path)
    save_tiny_model(folder)  # real weights in sft's final/, beside its record
    out = tmp_path / "exported"
    result = export(folder, out, merge_lora=False)
    assert read_provenance(out) == read_provenance(folder)
    notes: list[str] = []
    assert write_export_card(folder, out, store, notes) == out / "README.md" and notes == []
    card = (out / "README.md").read_text()
    assert ModelCard(card).data.base_model == "tiny-org/base" and SHA in card and fences(card)
    assert "README.md" not in result["files"]  # the child wrote none; the front did
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2

    bare = tmp_path / "bare"
    save_tiny_model(bare)
    assert write_export_card(bare, tmp_path, store, notes) is None  # nothing says how it was trained: no card
    assert notes == []


def test_a_card_that_cannot_be_written_is_a_note_and_the_export_stands(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.recipe import model_card
    from engine.runtime.export_job import write_export_card

    _, _, folder = a_run(store, tmp_path)
    out = tmp_path / "exported"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("a bug\nin the card")

    monkeypatch.setattr(model_card, "render_card", broken)
    notes: list[str] = []
    assert write_export_card(folder, out, store, notes) is None
    assert notes == ["no model card written (RuntimeError: a bug in the card)"]
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # the export untouched, no half card
