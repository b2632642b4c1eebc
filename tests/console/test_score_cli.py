"""`rlhf score`: a reward model scores a batch as an engine job, and the command
prints the mean score and the agreement with the people and judges who ranked it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from engine.demo.task import generate_tasks
from engine.recipe.reward_agreement import agreement
from store import open_workspace
from tests.tiny_models import tiny_tokenizer

RLHF = str(Path(sys.executable).with_name("rlhf"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # each command starts a worker that imports torch


def save_reward_model(folder: Path) -> Path:
    """A tiny random reward model (a sequence-classification folder with one output)."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def ranked_batch(workspace: Path) -> tuple[int, list[int]]:
    """Four demo prompts with three responses each, ranked by alice and by judge:demo."""
    ws = open_workspace(workspace)
    tasks = generate_tasks(4, seed=1, split="heldout")
    ids = ws.store.add_prompts([{"text": t.prompt} for t in tasks])
    batch = ws.store.create_sample_batch(name="answers", settings={}, sources=["m"])
    ws.store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": r}
                          for pid, t in zip(ids, tasks) for r in (t.reference, f"maybe {t.reference}", "no")])
    feedback = ws.store.feedback
    feedback.items_from_batch(batch_id=batch.id, needed=2)
    for annotator in ("alice", "judge:demo"):
        while (item := feedback.next_item(batch_id=batch.id, annotator=annotator)) is not None:
            feedback.judge(item_id=item.id, annotator=annotator, outcome="ranking", shown=item.shown,
                           ranking=sorted(item.shown))
    sample_ids = [s.id for s in ws.store.list_samples(batch_id=batch.id)]
    ws.close()
    return batch.id, sample_ids


def test_rlhf_score_stores_scores_and_prints_agreement(tmp_path: Path, cli_env: dict[str, str]) -> None:
    model = save_reward_model(tmp_path / "rm")
    batch, sample_ids = ranked_batch(tmp_path / "ws")

    result = subprocess.run([RLHF, "score", str(model), "--batch", "answers"], env=cli_env, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr

    ws = open_workspace(tmp_path / "ws")
    scores = ws.store.scores.values_for(sample_ids, scorer=str(model))
    alices = [j.ranking for j in ws.store.feedback.live_judgements(batch_ids=[batch], annotators=["alice"])]
    ws.close()
    assert len(scores) == 12
    # Alice's 4 rankings of 3 state 12 preferences; the judge ranked exactly as she did.
    people = sum(agreement(ranking, scores).agreed for ranking in alices)
    assert f"batch {batch}: 12 of 12 responses scored by {model}; mean score " in result.stdout
    assert f"agreement with people: {people / 12:.0%} of 12 pairs (alice {people / 12:.0%} of 12 pairs)" \
        in result.stdout
    assert f"agreement with judges: {people / 12:.0%} of 12 pairs (judge:demo" in result.stdout

    # Again as JSON: nothing left to score, the same summary.
    result = subprocess.run([RLHF, "score", str(model), "--json"], env=cli_env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["batch_id"] == batch and summary["scored"] == 12
    assert summary["mean"] == pytest.approx(sum(scores.values()) / 12)
    assert summary["agreement"]["people"] == {"agreed": people, "pairs": 12, "share": people / 12}
    assert set(summary["agreement"]["by_annotator"]) == {"alice", "judge:demo"}


def test_rlhf_score_refuses_a_model_that_is_not_a_reward_model(tmp_path: Path, cli_env: dict[str, str]) -> None:
    from tests.tiny_models import save_tiny_model

    ranked_batch(tmp_path / "ws")
    causal = save_tiny_model(tmp_path / "lm")
    result = subprocess.run([RLHF, "score", str(causal)], env=cli_env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1
    assert "is not a reward model (LlamaForCausalLM with" in result.stdout
    result = subprocess.run([RLHF, "score", str(tmp_path / "missing")], env=cli_env, capture_output=True, text=True)
    assert result.returncode == 2 and "missing" in result.stderr
