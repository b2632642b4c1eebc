"""`rlhf generate` and `rlhf export` on real (tiny) model folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_model

RLHF = str(Path(sys.executable).with_name("rlhf"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_generate_answers_with_two_checkpoints_side_by_side(tmp_path: Path, cli_env: dict[str, str]) -> None:
    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    result = subprocess.run([RLHF, "generate", str(a), str(b), "Reverse the word cat.", "--k", "2",
                             "--max-new-tokens", "8", "--json"], env=cli_env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(result.stdout)
    assert [x["checkpoint"] for x in answers] == [str(a), str(a), str(b), str(b)]
    assert all(x["prompt"] == "Reverse the word cat." and 0 < x["tokens"] <= 8 for x in answers)
    # It ran as an engine job: the run and its samples are in the store.
    runs = json.loads(subprocess.run([RLHF, "ls", "--json"], env=cli_env, capture_output=True, text=True).stdout)
    assert runs[0]["status"] == "succeeded"


def test_export_writes_a_plain_folder_and_refuses_to_overwrite(tmp_path: Path, cli_env: dict[str, str]) -> None:
    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "exported"
    done = subprocess.run(
        [RLHF, "export", str(model), "--out", str(out)], env=cli_env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))

    again = subprocess.run(
        [RLHF, "export", str(model), "--out", str(out)], env=cli_env, capture_output=True, text=True, timeout=240
    )
    assert again.returncode == 2 and str(out) in again.stderr
