"""Reward scores of stored responses: per scorer, the newest standing."""

from __future__ import annotations

from store import Store


def two_samples(store: Store) -> list[int]:
    (prompt,) = store.add_prompts([{"text": "What is 3 + 5?"}])
    batch = store.create_sample_batch(name="b", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": prompt, "batch_id": batch.id, "response": r} for r in ("8", "9")])
    return [s.id for s in store.list_samples(batch_id=batch.id)]


def test_scores_are_kept_per_scorer_and_the_newest_stands(store: Store) -> None:
    good, bad = two_samples(store)
    store.scores.add_scores(scorer="/runs/1/reward/final", values={good: 1.5, bad: -0.5})
    store.scores.add_scores(scorer="hub:org/rm", values={good: 0.25})
    store.scores.add_scores(scorer="/runs/1/reward/final", values={bad: -2.0})  # scored again

    scores = store.scores.scores_for([bad, good, 12345])
    assert [(s.sample_id, s.scorer, s.value) for s in scores] == [
        (good, "/runs/1/reward/final", 1.5), (good, "hub:org/rm", 0.25), (bad, "/runs/1/reward/final", -2.0),
    ]
    assert store.scores.values_for([good, bad], scorer="hub:org/rm") == {good: 0.25}
    assert store.scores.scores_for([]) == []
    store.scores.add_scores(scorer="x", values={})  # nothing to write is not an error


def test_many_samples_are_looked_up_in_chunks(store: Store) -> None:
    (prompt,) = store.add_prompts([{"text": "q"}])
    store.add_samples([{"prompt_id": prompt, "response": str(i)} for i in range(1200)])
    ids = [s.id for s in store.list_samples()]
    store.scores.add_scores(scorer="rm", values={sid: float(sid) for sid in ids})
    assert store.scores.values_for(ids, scorer="rm") == {sid: float(sid) for sid in ids}
