"""Reward scores (`rlhf score`) appear beside the samples the console shows."""

from __future__ import annotations

from pathlib import Path

from console.view_models import SampleGroup, load_samples
from console.widgets.samples_view import render_samples
from store import open_workspace


def test_samples_show_the_reward_of_each_model_that_scored_them(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    store = ws.store
    (prompt,) = store.add_prompts([{"text": "What is 3 + 5?"}])
    batch = store.create_sample_batch(name="b", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r, "meta": {"tokens": 1}}
                       for r in ("8", "9")])
    good, bad = (s.id for s in store.list_samples(batch_id=batch.id))
    group = SampleGroup(id="b", label="batch b", batch_id=batch.id)
    assert [s.meta for s in load_samples(store, group)] == [{"tokens": 1}, {"tokens": 1}]  # nothing scored yet

    store.scores.add_scores(scorer="/ws/runs/00003/reward/final", values={good: 1.25})
    shown = load_samples(store, group)
    assert [s.meta for s in shown] == [{"tokens": 1, "reward": 1.25}, {"tokens": 1}]
    assert "tokens=1  reward=1.25" in render_samples(shown).plain

    store.scores.add_scores(scorer="hub:org/rm", values={good: -0.5, bad: 0.5})
    assert load_samples(store, group)[0].meta == {"tokens": 1, "reward 00003/reward": 1.25, "reward hub:org/rm": -0.5}
    ws.close()
