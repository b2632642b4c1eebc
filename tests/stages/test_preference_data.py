"""Preference data for the reward and DPO stages: selection, pairs, split by prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import UserInputError
from engine.feedback.stored.importing import import_file
from engine.stages.common.preference_data import load_preference_data, split_by_prompt, to_dataset
from engine.stages.common.preference_spec import PreferenceDataSpec
from store import Store


def judged_batch(store: Store, prompts: int = 10, k: int = 3) -> int:
    """Each prompt's K responses ranked by `ann` (best = response 0) and by judge:demo (a pair's tie)."""
    ids = store.add_prompts([{"text": f"question {i}"} for i in range(prompts)])
    batch = store.create_sample_batch(name="b", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": f"r{j} of {pid}"}
                       for pid in ids for j in range(k)])
    feedback = store.feedback
    feedback.items_from_batch(batch_id=batch.id, needed=2)
    for annotator in ("ann", "judge:demo"):
        while (item := feedback.next_item(batch_id=batch.id, annotator=annotator)) is not None:
            order = sorted(item.shown)  # the lowest sample id (response 0) first
            feedback.judge(item_id=item.id, annotator=annotator, outcome="ranking", shown=item.shown, ranking=order)
    return batch.id


def spec(**fields: object) -> PreferenceDataSpec:
    return PreferenceDataSpec.model_validate({"kind": "reward", **fields})


def test_people_only_and_judges_only_select_different_pairs(make_context, workspace) -> None:
    batch = judged_batch(workspace.store, prompts=10, k=3)
    ctx = make_context(spec(batches=[str(batch)]))

    everyone = load_preference_data(ctx, spec(batches=[str(batch)], eval_fraction=0.2))
    assert everyone.summary["pairs"] == 10 * 3 * 2  # C(3,2) per prompt, two annotators
    people = load_preference_data(ctx, spec(batches=[str(batch)], annotators="people"))
    assert people.summary["pairs"] == 30 and people.summary["annotators"] == {"ann": 30}
    judges = load_preference_data(ctx, spec(batches=["b"], annotators="judges"))
    assert judges.summary["annotators"] == {"judge:demo": 30}
    named = load_preference_data(ctx, spec(batches=["b"], annotator_names=["ann"]))
    assert named.summary["pairs"] == 30

    # The chosen response is always the better-ranked one.
    for example in everyone.train + everyone.eval:
        assert int(example.pair.chosen.split()[0][1:]) < int(example.pair.rejected.split()[0][1:])


def test_the_held_out_split_is_by_prompt(make_context, workspace) -> None:
    batch = judged_batch(workspace.store, prompts=20, k=3)
    ctx = make_context(spec(batches=[str(batch)]))
    data = load_preference_data(ctx, spec(batches=[str(batch)], eval_fraction=0.25))
    train_prompts = {e.pair.group for e in data.train}
    eval_prompts = {e.pair.group for e in data.eval}
    assert len(eval_prompts) == 5 and not train_prompts & eval_prompts
    again = load_preference_data(ctx, spec(batches=[str(batch)], eval_fraction=0.25))
    assert {e.pair.group for e in again.eval} == eval_prompts  # deterministic
    assert split_by_prompt(data.train[:3], 0.0) == (data.train[:3], [])


def test_files_and_margins_become_a_trl_dataset(make_context, tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad"}) + "\n"
                            for i in range(4)))
    ctx = make_context(spec(preferences=f"path:{path}"))
    data = load_preference_data(ctx, spec(preferences=f"path:{path}", eval_fraction=0.25))
    assert data.summary["annotators"] == {"import:prefs.jsonl": 4}
    dataset = to_dataset(data.train)
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert dataset[0]["prompt"] == [{"role": "user", "content": dataset[0]["prompt"][0]["content"]}]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": "good"}]


def test_ties_under_the_margin_policy(make_context, workspace) -> None:
    store = workspace.store
    ids = store.add_prompts([{"text": "q"}])
    batch = store.create_sample_batch(name="t", settings={}, sources=[])
    store.add_samples([{"prompt_id": ids[0], "batch_id": batch.id, "response": r} for r in ("x", "y")])
    store.feedback.items_from_batch(batch_id=batch.id)
    item = store.feedback.next_item(batch_id=batch.id, annotator="ann")
    assert item is not None
    store.feedback.judge(item_id=item.id, annotator="ann", outcome="tie", shown=item.shown)
    ctx = make_context(spec(batches=["t"]))
    with pytest.raises(UserInputError, match="no preference pairs"):
        load_preference_data(ctx, spec(batches=["t"]))  # ties = drop
    data = load_preference_data(ctx, spec(batches=["t"], ties="margin", eval_fraction=0))
    assert sorted((e.pair.chosen, e.pair.margin) for e in data.train) == [("x", 0.0), ("y", 0.0)]
    assert to_dataset(data.train).column_names == ["prompt", "chosen", "rejected", "margin"]


def test_a_spec_without_data_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="name what to learn from"):
        spec()
    with pytest.raises(ValidationError, match="ISO date"):
        spec(batches=["b"], since="last tuesday")


def claiming_file(path: Path) -> Path:
    """A judgement table whose rows claim to be a person's and the demo judge's."""
    path.write_text("".join(
        json.dumps({"prompt": f"p{i}", "responses": ["good", "bad"], "ranking": [0, 1], "annotator": who}) + "\n"
        for i, who in enumerate(["alice", "judge:demo", "alice", "judge:demo"])))
    return path


def test_a_file_that_names_annotators_is_still_the_file(make_context, workspace, tmp_path: Path) -> None:
    # Read by the stage directly: every pair is the file's, so "people" or "judges" selects none of it.
    path = claiming_file(tmp_path / "claims.jsonl")
    ctx = make_context(spec(preferences=f"path:{path}"))
    data = load_preference_data(ctx, spec(preferences=f"path:{path}", eval_fraction=0.0))
    assert data.summary["annotators"] == {"import:claims.jsonl": 4}
    # annotator_names may still pick rows by the name the file gives them.
    picked = load_preference_data(ctx, spec(preferences=f"path:{path}", annotator_names=["alice"], eval_fraction=0.0))
    assert picked.summary["annotators"] == {"import:claims.jsonl": 2}

    # Imported into the store (`rlhf prefs import`): recorded as import:FILE, the claim kept beside it.
    batch_id, _ = import_file(workspace.store, path)
    judgements = workspace.store.feedback.judgements(batch_id=batch_id)
    assert {j.annotator for j in judgements} == {"import:claims.jsonl"}
    assert sorted(j.source_annotator or "" for j in judgements) == ["alice", "alice", "judge:demo", "judge:demo"]
    with pytest.raises(UserInputError, match="no preference pairs"):
        load_preference_data(ctx, spec(batches=[str(batch_id)], annotators="people"))
