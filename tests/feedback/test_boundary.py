"""engine.feedback stays torch-free, and pyarrow stays unimported until a parquet file is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "pyarrow")

CODE = """
import json, pathlib, sys
from engine.feedback import (Judgement, Response, preference_pairs, unpaired_examples, write_trl,
                             write_judgements, read_feedback, agreement_from_judgements, leaderboard,
                             games_from_judgements)
folder = pathlib.Path(sys.argv[1])
j = Judgement("k", "p", (Response("a", "x", "m1"), Response("b", "y", "m2")), "a_better", annotator="u")
read_feedback(write_trl(preference_pairs([j]), folder / "p.jsonl"))
read_feedback(write_judgements([j], folder / "j.csv"))
unpaired_examples([j]); agreement_from_judgements([j]); leaderboard(games_from_judgements([j]), rounds=5)
print(json.dumps([m for m in %r if m in sys.modules]))
""" % (HEAVY,)


def test_the_feedback_logic_imports_no_ml_library_nor_pyarrow(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
