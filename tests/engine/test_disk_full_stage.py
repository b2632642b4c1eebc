"""A stage that fills the disk ends failed with "no space left on device" and the
path, recorded in the store on that same full disk (issue 14).

Before: the worker and the run process died, the store kept saying
`running`, and afterwards the only message was "its run process died". The
room the run process sets aside before its stages start (store/space_reserve.py)
is what lets the failure be written.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine
from store import RunStatus, StageStatus
from store.space_reserve import RESERVE_NAME
from tests.support import mounted_tmpfs

from .conftest import fake_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # a real detached run

RLHF = str(Path(sys.executable).with_name("rlhf"))


async def test_a_stage_that_fills_the_disk_fails_saying_so(
    tmp_path: Path, engine_env: None, open_engine: Callable[[Path], Engine]
) -> None:
    with mounted_tmpfs(tmp_path / "disk", "16m") as disk:
        engine = open_engine(disk / "ws")
        run = await engine.submit(fake_pipeline(tmp_path, steps=50, step_seconds=0.01, fill_disk_at=3))
        deadline = time.monotonic() + 60
        while (final := await engine.get_run(run.id)).status.is_active:
            assert time.monotonic() < deadline, "the run never ended"
            await asyncio.sleep(0.1)

        assert final.status == RunStatus.FAILED
        (stage,) = engine.store.list_stages(run_id=run.id)
        assert stage.status == StageStatus.FAILED
        stage_dir = engine.workspace.stage_dir(run.id, "work")
        assert stage.error == f"no space left on device: {stage_dir}", stage.error
        assert "no space left on device" in (final.error or "")
        assert not (disk / "ws" / RESERVE_NAME).exists()  # spent on telling it
        # The disk is still full, and the run can still be read from the command line.
        shown = subprocess.run([RLHF, "-w", str(disk / "ws"), "status", str(run.id)], capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0 and "no space left on device" in shown.stdout, shown.stdout + shown.stderr


async def test_the_run_process_sets_room_aside_before_its_stages(
    tmp_path: Path, engine_env: None, open_engine: Callable[[Path], Engine]
) -> None:
    engine = open_engine(tmp_path / "ws")
    run = await engine.submit(fake_pipeline(tmp_path, steps=2, step_seconds=0.01))
    deadline = time.monotonic() + 60
    while (await engine.get_run(run.id)).status.is_active:
        assert time.monotonic() < deadline, "the run never ended"
        await asyncio.sleep(0.1)
    reserve = tmp_path / "ws" / RESERVE_NAME
    assert reserve.is_file() and reserve.stat().st_blocks * 512 >= reserve.stat().st_size > 0  # allocated, not sparse
