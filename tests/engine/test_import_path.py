"""The workspace is never on a run process's import path (issue 14).

The run process and its workers start with `python -m` in the workspace (or
a stage folder), which Python would put first on the import path: a
`psutil.py` planted in a shared workspace ran inside the run process as the
user who started the run. Now every process the engine starts runs in
Python's safe-path mode.
"""

from __future__ import annotations

from pathlib import Path

from engine import Engine
from store import RunStatus

from .conftest import fake_pipeline
from .test_engine import wait_for


async def test_a_module_planted_in_the_workspace_never_runs(engine: Engine, tmp_path: Path) -> None:
    marker = tmp_path / "planted-module-ran"
    planted = f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError('planted')\n"
    root = engine.workspace.root
    # The run process starts in the workspace, the stage's worker in its stage folder.
    for folder in (root, engine.workspace.stage_dir(1, "work")):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("psutil.py", "json.py", "yaml.py"):
            (folder / name).write_text(planted)

    run = await engine.submit(fake_pipeline(tmp_path, steps=3))
    assert run.id == 1
    finished = await wait_for(engine, run.id, lambda r: not r.status.is_active, timeout=60)

    assert finished.status == RunStatus.SUCCEEDED, finished.error
    assert not marker.exists()
