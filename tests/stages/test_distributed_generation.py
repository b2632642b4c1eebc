"""full_weights_for_generation (engine/stages/common/distributed.py) with real
sharding: two torchrun processes over gloo on the CPU, a tiny Llama sharded by
FSDP2, FSDP1 or DeepSpeed ZeRO-3 (when deepspeed is installed), generating
inside the context; each generation must give the unsharded copy's tokens, and
training must go on sharded after it. A run that hangs (a process waiting in a
collective the others never join) fails on the timeout."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime.launcher import child_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WORKER = Path(__file__).with_name("distributed_generation_worker.py")
needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed")


@pytest.mark.parametrize(
    ("sharding", "who"),
    [
        pytest.param("fsdp2", "alone", id="fsdp2-only-the-main-process-generates"),
        pytest.param("fsdp2", "uneven", id="fsdp2-processes-generate-different-lengths"),
        pytest.param("fsdp1", "all", id="fsdp1-every-process-generates"),
        pytest.param("zero3", "alone", marks=needs_deepspeed, id="zero3-only-the-main-process-generates"),
        pytest.param("zero3", "uneven", marks=needs_deepspeed, id="zero3-processes-generate-different-lengths"),
    ],
)
def test_generation_sees_the_full_weights(sharding: str, who: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), sharding, who],
        env=child_env({"OMP_NUM_THREADS": "1"}), capture_output=True, text=True, timeout=240,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = sorted(json_objects(done.stdout), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["same_tokens"] is True
    assert reports[1]["same_tokens"] is (None if who == "alone" else True)
    for report in reports:
        assert report["loss"] == pytest.approx(report["reference_loss"], rel=1e-5)


def json_objects(text: str) -> list[dict]:
    """Every JSON object printed, even when two ranks' prints landed on one line
    (`{...}{...}`: both write to the same stdout at once; seen once in CI)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at != -1:
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = text.find("{", end)
    return found
