"""trackio in its local store (issue 15): what the stage's tap sends is what
trackio keeps. Skipped where trackio is not installed: it is not in the test
extra (about a minute and 20 packages to install). W&B's offline files have no
reader in its package (0.31), so they are not read back here."""

from __future__ import annotations

import math

import pytest

from engine.stages.common.trackers import DEFAULT_PROJECT, start_trackers


def test_trackio_keeps_what_the_stage_sent(tmp_path, monkeypatch) -> None:
    store = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(store))
    pytest.importorskip("trackio")
    from trackio import sqlite_storage, utils

    for module in (sqlite_storage, utils):  # read at import; trackio may have been imported before
        monkeypatch.setattr(module, "TRACKIO_DIR", store)
    rows = [{"step": step, "key": key, "value": value, "wall_time": 1000.0 + step}
            for step in range(1, 4) for key, value in (("train/loss", 3.0 - step), ("train/learning_rate", 1e-3))]
    rows.append({"step": 3, "key": "eval/loss", "value": math.inf, "wall_time": 1004.0})  # a diverged NaN, as stored
    said: list[str] = []
    trackers = start_trackers(["trackio"], stage_dir=tmp_path / "stage", run_name="tiny", stage_name="sft", kind="sft",
                              config={"kind": "sft"}, restart_step=0, say=said.append)
    trackers.write(rows)
    trackers.close()

    assert sqlite_storage.SQLiteStorage.get_runs(DEFAULT_PROJECT) == ["tiny/sft"]
    logs = sqlite_storage.SQLiteStorage.get_logs(DEFAULT_PROJECT, "tiny/sft")
    kept = sorted((log["step"], key, value) for log in logs for key, value in log.items()
                  if key not in ("step", "timestamp"))
    assert kept == sorted((row["step"], row["key"], row["value"]) for row in rows)
    assert said == [f"trackio: project {DEFAULT_PROJECT}, run tiny/sft, in {store} "
                    f"(trackio show --project {DEFAULT_PROJECT})"]
