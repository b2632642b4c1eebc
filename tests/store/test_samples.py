"""Prompts and samples: provenance kept, prompts stored once."""

from __future__ import annotations

from pathlib import Path

from store import NewStage, open_workspace


def test_samples_keep_their_prompt_and_provenance(tmp_path: Path) -> None:
    store = open_workspace(tmp_path / "ws").store
    run = store.create_run(name="r", spec_text="", spec={}, spec_path=None,
                           stages=[NewStage("sft", "sft", 0, None, {}), NewStage("sample", "sample", 1, "sft", {})])
    sft, sample_stage = store.list_stages(run_id=run.id)

    ids = store.add_prompts([{"text": "Add 2 and 3.", "reference": "5", "source": "builtin:demo"},
                             {"text": "Spell cat."}, {"text": "Add 2 and 3."}])
    assert ids[0] == ids[2] != ids[1]  # the same text is one prompt
    assert [p.reference for p in store.get_prompts(ids[:2])] == ["5", None]

    store.add_samples([{"prompt_id": ids[0], "response": "5", "run_id": run.id, "stage_id": sft.id,
                        "step": 10, "checkpoint": "/ckpt/10"}])
    batch = store.create_sample_batch(name="round-1", settings={"k": 2, "temperature": 0.8},
                                      sources=["/ckpt/final"], run_id=run.id, stage_id=sample_stage.id)
    store.add_samples([{"prompt_id": ids[1], "response": r, "batch_id": batch.id, "stage_id": sample_stage.id,
                        "checkpoint": "/ckpt/final", "meta": {"finished": True}} for r in ("c-a-t", "cat")])

    (during,) = store.list_samples(stage_id=sft.id, step=10)
    assert (during.prompt, during.response, during.checkpoint) == ("Add 2 and 3.", "5", "/ckpt/10")
    ranked = store.list_samples(batch_id=batch.id)
    assert [s.response for s in ranked] == ["c-a-t", "cat"] and ranked[0].meta == {"finished": True}
    assert store.sample_steps(stage_id=sft.id) == [10]
    assert store.list_sample_batches(run_id=run.id)[0].settings == {"k": 2, "temperature": 0.8}
