"""Another round: the next pipeline starts from the newest policy and keeps every round's rankings."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import UserInputError
from engine.recipe.rounds import next_round_spec
from store import NewStage, StageStatus, Store, open_workspace


def finished_run(store: Store, tmp_path: Path, name: str, spec: dict, kinds: list[tuple[str, str]]) -> int:
    run = store.create_run(name=name, spec_text="", spec=spec, spec_path=None, stages=[
        NewStage(name=n, kind=k, position=i, parent=None, config={}) for i, (n, k) in enumerate(kinds)])
    for stage in store.list_stages(run_id=run.id):
        folder = tmp_path / name / stage.name / "final"
        folder.mkdir(parents=True)
        store.update_stage(stage.id, status=StageStatus.SUCCEEDED, output_path=str(folder))
    return run.id


def ranked_batch(store: Store, run_id: int, stage_name: str) -> int:
    stage = next(s for s in store.list_stages(run_id=run_id) if s.name == stage_name)
    [prompt] = store.add_prompts([{"text": f"q {run_id}"}])
    batch = store.create_sample_batch(name=stage_name, settings={}, sources=[], run_id=run_id, stage_id=stage.id)
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("a", "b")])
    store.feedback.items_from_batch(batch_id=batch.id)
    item = store.feedback.next_item(batch_id=batch.id, annotator="judge:demo")
    assert item is not None
    store.feedback.judge(item_id=item.id, annotator="judge:demo", outcome="a_better", shown=item.shown)
    return batch.id


def test_rounds_start_from_the_newest_policy_and_keep_every_ranking(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    store = ws.store
    demo = finished_run(store, tmp_path, "demo", {"stages": {}},
                        [("sft", "sft"), ("sample", "sample"), ("rank", "rank"), ("reward", "reward"),
                         ("ppo", "ppo"), ("dpo", "dpo")])
    first = ranked_batch(store, demo, "sample")

    second = next_round_spec(store, demo)
    assert second.name == "demo-round-2"
    assert second.stages["sample"].models == [f"path:{tmp_path / 'demo' / 'ppo' / 'final'}"]  # PPO before DPO
    assert second.stages["reward"].batches == [str(first)]
    assert second.stages["reward"].from_ == f"path:{tmp_path / 'demo' / 'reward' / 'final'}"
    assert second.stages["rank"].judge == "demo"
    assert (second.stages["ppo"].learning_rate, second.stages["ppo"].seed, second.stages["sample"].seed) == (
        1e-5, 2, 2)  # the round's number seeds it; 1e-5 survives the TOML exactly

    round2 = finished_run(store, tmp_path, "demo-round-2", {"stages": second.to_dict()},
                          [("sample", "sample"), ("rank", "rank"), ("reward", "reward"), ("ppo", "ppo")])
    new = ranked_batch(store, round2, "sample")
    third = next_round_spec(store, round2, judge=None)
    assert third.name == "demo-round-3"
    assert third.stages["reward"].batches == [str(first), str(new)]  # every round's rankings
    assert third.stages["rank"].judge is None  # people rank this one
    assert third.stages["sample"].models == [f"path:{tmp_path / 'demo-round-2' / 'ppo' / 'final'}"]
    ws.close()


def test_a_run_without_a_policy_cannot_go_another_round(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    run = finished_run(ws.store, tmp_path, "p", {"stages": {}}, [("pretrain", "pretrain")])
    with pytest.raises(UserInputError, match="no finished policy stage"):
        next_round_spec(ws.store, run)
    ws.close()
