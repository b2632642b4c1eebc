"""`rlhf metrics export RUN --format csv|tensorboard`: what the store holds, in
files other tools read (issue 15)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from console import cli
from store import NewStage

#: (stage, key, step, value); wall_time is 1000 + the row's position
POINTS = [
    ("pre", "eval/loss", 0, 8.3), ("pre", "train/loss", 1, 8.0), ("pre", "train/loss", 2, 7.25),
    ("pre", "train/loss", 3, 6.5), ("pre", "eval/loss", 3, 6.75),
    ("sft", "train/loss", 1, 2.5), ("sft", "train/loss", 2, math.inf),  # diverged: the store keeps NaN as inf
]


@pytest.fixture
def workspace_with_a_run(tmp_path: Path, open_engine) -> Path:
    engine = open_engine(tmp_path / "ws")
    run = engine.store.create_run(
        name="tiny", spec_text="", spec={}, spec_path=None,
        stages=[NewStage(name="pre", kind="pretrain", position=0, parent=None, config={}),
                NewStage(name="sft", kind="sft", position=1, parent=None, config={})],
    )
    stage_ids = {s.name: s.id for s in engine.store.list_stages(run_id=run.id)}
    engine.store.add_metrics([
        {"run_id": run.id, "stage_id": stage_ids[stage], "key": key, "step": step, "value": value,
         "wall_time": 1000.0 + i}
        for i, (stage, key, step, value) in enumerate(POINTS)
    ])
    return tmp_path / "ws"


def rlhf(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_csv_has_a_row_per_stored_point_in_stage_step_key_order(workspace_with_a_run, capsys, tmp_path) -> None:
    out = tmp_path / "metrics.csv"
    code, said, err = rlhf(capsys, "-w", str(workspace_with_a_run), "metrics", "export", "tiny", "--out", str(out))
    assert (code, err) == (0, "")
    assert said.strip() == f"wrote 7 metric points of 2 stage(s) (pre, sft) to {out}"
    with out.open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["run", "stage", "step", "key", "value", "wall_time"]
    assert [(r[1], r[3], int(r[2]), float(r[4])) for r in rows[1:]] == [
        ("pre", "eval/loss", 0, 8.3), ("pre", "train/loss", 1, 8.0), ("pre", "train/loss", 2, 7.25),
        ("pre", "eval/loss", 3, 6.75), ("pre", "train/loss", 3, 6.5),
        ("sft", "train/loss", 1, 2.5), ("sft", "train/loss", 2, math.inf),
    ]
    assert {r[0] for r in rows[1:]} == {"tiny"}
    assert float(rows[1][5]) == 1000.0  # the wall time the stage logged it at


def test_pandas_reads_the_csv_and_pivots_it_wide_in_one_call(workspace_with_a_run, capsys, tmp_path,
                                                             monkeypatch) -> None:
    pd = pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    code, _, _ = rlhf(capsys, "-w", str(workspace_with_a_run), "metrics", "export", "tiny")
    assert code == 0
    table = pd.read_csv(tmp_path / "tiny-metrics.csv")  # the default name, in the current folder
    wide = table.pivot_table(index=["stage", "step"], columns="key", values="value")
    assert wide.loc[("pre", 3), "eval/loss"] == 6.75
    assert wide.loc[("sft", 2), "train/loss"] == math.inf
    assert math.isnan(wide.loc[("pre", 1), "eval/loss"])  # not logged at that step


def test_tensorboard_export_has_a_folder_per_stage_that_tensorboard_reads(workspace_with_a_run, capsys,
                                                                          tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    code, said, err = rlhf(capsys, "-w", str(workspace_with_a_run), "metrics", "export", "tiny",
                           "--format", "tensorboard", "--out", str(out))
    assert (code, err) == (0, "")
    assert said.strip().endswith(f"as TensorBoard event files to {out} (tensorboard --logdir {out})")
    assert sorted(p.name for p in out.iterdir()) == ["pre", "sft"]
    for stage in ("pre", "sft"):
        reader = EventAccumulator(str(out / stage), size_guidance={"scalars": 0})
        reader.Reload()
        shown = {tag: [(e.step, e.value, e.wall_time) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}
        expected: dict[str, list[tuple[int, float, float]]] = {}
        for i, (s, key, step, value) in enumerate(POINTS):
            if s == stage:
                expected.setdefault(key, []).append((step, float(np.float32(value)), 1000.0 + i))
        assert shown == expected, stage


def test_an_export_never_overwrites_and_leaves_nothing_half_written(workspace_with_a_run, capsys,
                                                                    tmp_path) -> None:
    out = tmp_path / "metrics.csv"
    out.write_text("mine\n")
    code, _, err = rlhf(capsys, "-w", str(workspace_with_a_run), "metrics", "export", "tiny", "--out", str(out))
    assert code == 2
    assert err.strip() == f"rlhf: {out}: exists; choose a new file for the export (or remove it)"
    assert out.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "ws"]

    inside_a_file = out / "metrics.csv"  # its folder is the file written above
    code, _, err = rlhf(capsys, "-w", str(workspace_with_a_run), "metrics", "export", "tiny",
                        "--out", str(inside_a_file))
    assert code == 2
    assert err.strip().startswith(f"rlhf: {inside_a_file}: cannot write the export there (")
    assert len(err.strip().splitlines()) == 1 and out.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "ws"]


@pytest.mark.parametrize(("argv", "message"), [
    (["metrics", "tiny", "--format", "csv"], "rlhf: --format and --out go with export: "
                                             "rlhf metrics export tiny --format ..."),
    (["metrics", "export", "tiny", "--max-points", "5"], "rlhf: --max-points does not go with export: "
                                                        "it writes every stored point"),
    (["metrics", "export", "nosuch"], "rlhf: no run named or numbered 'nosuch' in "),
    (["metrics", "export", "tiny", "--key", "eval/nothing"], "rlhf: run 'tiny' has no stored metrics for key "
                                                          "'eval/nothing'; nothing to export"),
])
def test_a_wrong_export_command_is_exit_2_in_one_line(workspace_with_a_run, capsys, argv, message) -> None:
    code, _, err = rlhf(capsys, "-w", str(workspace_with_a_run), *argv)
    assert code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
