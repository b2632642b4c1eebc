"""A resumed stage starts from the newest whole checkpoint (issue 14).

Each case is a reproduction: a `trainer_state.json` cut at 32 KiB by a kill,
a missing `optimizer.pt`, a truncated `model.safetensors`, a folder half
deleted by the rotation. Before, the first made every resume fail with a
JSONDecodeError, the second started a fresh optimizer without a word.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.runtime.checkpoints import OptimizerStateLost, checkpoint_problem, newest_whole_checkpoint
from tests.tiny_models import tiny_model, tiny_tokenizer


def write_checkpoint(root: Path, step: int) -> Path:
    """A Trainer-style checkpoint folder: weights, tokenizer, optimizer and scheduler, trainer_state.json last."""
    folder = root / f"checkpoint-{step}"
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": [{}] * 500}))
    return folder


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    root = tmp_path / "checkpoints"
    for step in (100, 200):
        write_checkpoint(root, step)
    return root


def test_the_newest_whole_checkpoint_is_used(checkpoints: Path) -> None:
    assert checkpoint_problem(checkpoints / "checkpoint-200") is None
    assert newest_whole_checkpoint(checkpoints) == checkpoints / "checkpoint-200"


def skipped_by(checkpoints: Path, **options: bool) -> tuple[Path | None, list[tuple[str, str]]]:
    skipped: list[tuple[str, str]] = []
    chosen = newest_whole_checkpoint(checkpoints, skipped=lambda f, why: skipped.append((f.name, why)), **options)
    return chosen, skipped


def test_a_trainer_state_cut_by_a_kill_is_skipped_for_the_previous_one(checkpoints: Path) -> None:
    state = checkpoints / "checkpoint-200" / "trainer_state.json"
    state.write_bytes(state.read_bytes()[:32768] if state.stat().st_size > 32768 else state.read_bytes()[:-7])
    chosen, skipped = skipped_by(checkpoints)
    assert chosen == checkpoints / "checkpoint-100"
    assert skipped == [("checkpoint-200", "trainer_state.json is cut short or not JSON")]


def test_a_missing_optimizer_is_skipped_unless_only_weights_are_wanted(checkpoints: Path) -> None:
    (checkpoints / "checkpoint-200" / "optimizer.pt").unlink()
    chosen, skipped = skipped_by(checkpoints)
    assert chosen == checkpoints / "checkpoint-100"
    assert skipped == [("checkpoint-200", "no optimizer state (optimizer.pt missing or empty) "
                                          "(`rlhf resume --weights-only` would use its weights)")]
    assert newest_whole_checkpoint(checkpoints, weights_only=True) == checkpoints / "checkpoint-200"


def test_weights_without_their_optimizer_are_refused_rather_than_restarted_from_scratch(checkpoints: Path) -> None:
    # Before: with no whole checkpoint left the stage quietly started over (or, earlier still,
    # resumed with a fresh optimizer). The user's steps are in those weights: say how to keep them.
    for step in (100, 200):
        (checkpoints / f"checkpoint-{step}" / "scheduler.pt").unlink()
    with pytest.raises(OptimizerStateLost) as refused:
        newest_whole_checkpoint(checkpoints)
    assert refused.value.folder == checkpoints / "checkpoint-200"
    assert "scheduler.pt missing" in str(refused.value) and "--weights-only" in str(refused.value)
    assert newest_whole_checkpoint(checkpoints, weights_only=True) == checkpoints / "checkpoint-200"


def test_truncated_weights_are_named(checkpoints: Path) -> None:
    weights = checkpoints / "checkpoint-200" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    chosen, [(name, why)] = skipped_by(checkpoints)
    assert chosen == checkpoints / "checkpoint-100" and name == "checkpoint-200"
    assert why.startswith("model.safetensors: cut short (")


def test_a_folder_half_deleted_by_the_rotation_is_not_resumed_from(checkpoints: Path) -> None:
    (checkpoints / "checkpoint-100" / "model.safetensors").unlink()  # rmtree killed midway
    (checkpoints / "checkpoint-200" / "trainer_state.json").unlink()  # and the newer one never finished
    chosen, skipped = skipped_by(checkpoints)
    assert chosen is None
    assert [name for name, _ in skipped] == ["checkpoint-200", "checkpoint-100"]
    assert skipped[1][1].startswith("no weights")


def test_a_ppo_checkpoint_needs_its_own_state_file(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 3)
    for name in ("optimizer.pt", "scheduler.pt"):
        (folder / name).unlink()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3, "stage": "ppo"}))
    assert checkpoint_problem(folder) == "no optimizer state (ppo_state.pt missing or empty)"
    torch.save({"update": 3}, folder / "ppo_state.pt")
    assert checkpoint_problem(folder) is None
