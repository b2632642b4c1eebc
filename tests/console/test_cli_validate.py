"""`rlhf validate`, `--set`, `--version`, completion, help text and strict JSON: the command line
people expect (issue #15 item 5). In-process through `main(argv)`; nothing here starts a run."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from console import cli, headless
from engine.runtime.devices import visible_gpus
from engine.runtime.updates import MetricsLogged

GOOD = """\
name = "tiny"
# sft is written first, but needs pretrain's output: it runs second
[stages.sft]
kind = "sft"
from = "pretrain"

[stages.pretrain]
kind = "pretrain"
data = "./corpus.txt"
max_steps = 20
"""

#: the bad specs tests/console/test_cli.py gives `rlhf run`, and what its message names
BAD = [
    ('[stages.a]\nkind = "pretrain"\nstepz = 3\n', ["spec.toml", "'a'", "'stepz'"]),
    ('[stages.a]\nkind = "pretrain"\nmax_steps = "3"\n', ["spec.toml", "'a'", "'max_steps'", "integer"]),
    ('[stages.a]\nkind = "pretrain"\nfrom = "nosuch"\n', ["spec.toml", "'a'", "'from'", "nosuch"]),
    ('[stages.a]\nkind = "pretrain"\ndata = "./missing.txt"\n', ["spec.toml", "'a'", "'data'", "missing.txt"]),
    ('[stages.a]\nkind = "pretrain"\ndata = "./latin1.txt"\n', ["spec.toml", "'a'", "'data'", "latin1.txt"]),
    ('[stages.a]\nkind = "pretrian"\n', ["spec.toml", "'a'", "'kind'", "pretrain"]),
    ('[stages.a]\nkind = "pretrain"\nfrom = "b"\n[stages.b]\nkind = "pretrain"\nfrom = "a"\n', ["cycle"]),
    ('[stages.a]\nkind = "pretrain"\nmax_steps = \n', ["spec.toml", "line 3"]),
]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a corpus and a non-UTF-8 text file; the workspace would be folder/ws."""
    (tmp_path / "corpus.txt").write_text("a few words to pretrain on\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    monkeypatch.setenv("RLHF_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine as one without GPUs, whatever it has (visible_gpus is cached per process)."""
    monkeypatch.setenv("RLHF_DEVICES", "cpu")
    visible_gpus.cache_clear()
    yield
    visible_gpus.cache_clear()


def rlhf(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse and most parsers do."""
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def no_workspace_anywhere(folder: Path) -> bool:
    return not (folder / "ws").exists() and not (folder / "rlhf-workspace").exists()


# --- rlhf validate --------------------------------------------------------------------------------


def test_validate_prints_the_plan_in_run_order_and_opens_no_workspace(folder, capsys, cpu_only):
    (folder / "pipeline.toml").write_text(GOOD)
    code, out, err = rlhf(capsys, "validate", "pipeline.toml")

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "pipeline.toml: valid; run 'tiny', 2 stages in this order:"
    assert [line.strip() for line in lines if line.strip()[:2] in ("1.", "2.")] == [
        "1. pretrain (pretrain)", "2. sft (sft, after pretrain)"]
    assert f"data     path:{folder / 'corpus.txt'}" in out
    assert "from     stage:pretrain" in out
    assert "runs on  the CPU, 1 process" in out
    assert lines[-1] == "nothing was started or recorded; `rlhf run pipeline.toml` runs it"
    assert no_workspace_anywhere(folder)  # neither $RLHF_WORKSPACE nor ./rlhf-workspace
    assert rlhf(capsys, "validate", "pipeline.toml", "-w", str(folder / "named"))[0] == 0
    assert not (folder / "named").exists()


def test_validate_json_is_the_plan(folder, capsys, cpu_only):
    (folder / "pipeline.toml").write_text(GOOD)
    code, out, _ = rlhf(capsys, "validate", "pipeline.toml", "--json")

    plan = strict_json(out)
    assert code == 0
    assert (plan["name"], plan["source"]) == ("tiny", "pipeline.toml")
    assert [s["name"] for s in plan["stages"]] == ["pretrain", "sft"]
    pretrain, sft = plan["stages"]
    assert pretrain["sources"]["data"] == f"path:{folder / 'corpus.txt'}"
    assert (sft["after"], sft["sources"]["from"]) == (["pretrain"], "stage:pretrain")
    assert {k: sft[k] for k in ("device", "device_here", "slots", "processes", "strategy", "notes")} == {
        "device": "auto", "device_here": "cpu", "slots": 1, "processes": 1, "strategy": None, "notes": []}


def test_validate_warns_of_what_this_machine_would_refuse_but_the_spec_is_valid(folder, capsys, cpu_only):
    # A spec for a GPU machine validates anywhere (StageSpec's rule); the plan says what would happen here.
    (folder / "gpu.toml").write_text(GOOD.replace('kind = "sft"', 'kind = "sft"\nprocesses = 2\nstrategy = "fsdp"')
                                     .replace('kind = "pretrain"', 'kind = "pretrain"\ndevice = "cuda"'))
    code, out, _ = rlhf(capsys, "validate", "gpu.toml", "--json")

    assert code == 0
    pretrain, sft = strict_json(out)["stages"]
    assert pretrain["device_here"] == "cuda"
    assert pretrain["notes"] == ["it would fail when it starts here: it needs 1 CUDA GPU and none is visible "
                                 "(nvidia-smi, CUDA_VISIBLE_DEVICES, RLHF_DEVICES)"]
    assert (sft["strategy"], sft["processes"]) == ("fsdp", 2)
    assert any("would fail when it starts here" in note and "needs CUDA GPUs" in note for note in sft["notes"])

    code, out, _ = rlhf(capsys, "validate", "gpu.toml")
    assert code == 0
    assert "warning  it would fail when it starts here: it needs 1 CUDA GPU and none is visible" in out
    assert "2 processes through accelerate, strategy fsdp" in out


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_validate_rejects_a_bad_spec_with_exit_2_and_writes_nothing(folder, capsys, body, expected):
    (folder / "spec.toml").write_text(body)
    code, out, err = rlhf(capsys, "validate", "spec.toml")

    assert (code, out) == (2, "")
    assert err.startswith("rlhf: ")
    for fragment in expected:
        assert fragment in err, err
    assert no_workspace_anywhere(folder)


def test_validate_and_run_give_the_same_messages_for_a_bad_spec(folder, capsys):
    (folder / "spec.toml").write_text('[stages.a]\nkind = "pretrain"\ndata = "./latin1.txt"\n')
    messages = {}
    for spec in ("spec.toml", "missing.toml"):
        validated = rlhf(capsys, "validate", spec, "--set", "a.max_steps=0")
        run = rlhf(capsys, "run", spec, "--set", "a.max_steps=0")
        assert validated[0] == run[0] == 2
        assert validated[2] == run[2]
        messages[spec] = validated[2].splitlines()
    assert messages["missing.toml"] == ["rlhf: missing.toml: no such file"]
    assert len(messages["spec.toml"]) == 2  # one line per problem, in the file's order
    assert messages["spec.toml"][0].startswith("rlhf: spec.toml: stage 'a', field 'data': ")
    assert messages["spec.toml"][1] == ("rlhf: spec.toml: stage 'a', field 'max_steps' (--set a.max_steps): "
                                        "must be at least 1, got 0")
    # run opened its workspace to record the run, and recorded none
    assert strict_json(rlhf(capsys, "ls", "--json")[1]) == []


# --- --set --------------------------------------------------------------------------------------------


def test_set_on_validate_changes_the_plan(folder, capsys, cpu_only):
    (folder / "pipeline.toml").write_text(GOOD)
    (folder / "other.txt").write_text("other words\n")
    code, out, _ = rlhf(capsys, "validate", "pipeline.toml", "--set", "pretrain.data=other.txt",
                        "--set", "sft.device=cpu", "--json")
    pretrain, sft = strict_json(out)["stages"]
    assert code == 0
    assert pretrain["sources"]["data"] == f"path:{folder / 'other.txt'}"
    assert sft["device"] == "cpu"

    code, out, _ = rlhf(capsys, "validate", "pipeline.toml", "--set", "sft.max_steps=5")
    assert out.splitlines()[-1] == ("nothing was started or recorded; "
                                    "`rlhf run pipeline.toml --set=sft.max_steps=5` runs it")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sft.max_steps=lots", "rlhf: pipeline.toml: stage 'sft', field 'max_steps' (--set sft.max_steps): "
                               "expected an integer, got the string 'lots'"),
        ("sft.max_stepz=5", "rlhf: pipeline.toml: stage 'sft', field 'max_stepz' (--set sft.max_stepz): "
                            "unknown field for a sft stage; did you mean 'max_steps'?"),
        ("stf.max_steps=5", "rlhf: --set stf.max_steps: pipeline.toml has no stage 'stf'; did you mean 'sft'? "
                            "(stages: sft, pretrain)"),
        ("max_steps=5", "rlhf: --set 'max_steps=5': expected STAGE.KEY=VALUE, e.g. --set sft.max_steps=200"),
    ],
)
def test_a_bad_set_exits_2_naming_it_on_run_and_validate(folder, capsys, override, expected):
    (folder / "pipeline.toml").write_text(GOOD)
    for command in ("validate", "run"):
        code, out, err = rlhf(capsys, command, "pipeline.toml", "--set", override)
        assert (code, out) == (2, ""), command
        assert err.splitlines() == [expected], command


def test_run_records_the_spec_with_its_overrides(folder, capsys, engine_env, open_engine):
    (folder / "fake.toml").write_text('[stages.work]\nkind = "fake"\nsteps = 50\n')
    engine = open_engine(folder / "ws")  # kills what the run starts when the test ends
    code, out, _ = rlhf(capsys, "run", "fake.toml", "--set", "work.steps=2", "--set", "work.say=hi", "--detach",
                        "--json")
    assert code == 0
    run = engine.reads.get_run(strict_json(out)["id"])
    assert run.spec["stages"]["work"]["steps"] == 2
    assert run.spec["stages"]["work"]["say"] == "hi"
    assert run.spec_text.splitlines()[0] == "# fake.toml, with --set work.steps=2 --set work.say=\"hi\""


# --- --version, completion, help --------------------------------------------------------------------


def test_version_names_the_package_and_its_libraries(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"rlhf {metadata.version('rlhf-console')} (torch {metadata.version('torch')}, ")
    assert f"transformers {metadata.version('transformers')}" in out and f"trl {metadata.version('trl')}" in out


def test_version_and_validate_import_no_ml_library(folder):
    (folder / "pipeline.toml").write_text(GOOD)
    probe = ("import sys\nfrom console.cli import main\nassert main(['validate', 'pipeline.toml']) == 0\n"
             "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'trl', 'datasets'}))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=folder,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_a_script_for_every_command(folder, capsys, shell):
    code, script, err = rlhf(capsys, "completion", shell)
    assert (code, err) == (0, "")
    for command in ("validate", "run", "metrics", "prefs", "completion"):
        assert command in script
    assert "--set" in script and "--max-new-tokens" in script
    if shell == "bash":
        assert script.rstrip().endswith("complete -o bashdefault -F _shtab_rlhf rlhf")
    else:
        assert script.startswith("#compdef rlhf")
    assert no_workspace_anywhere(folder)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_the_bash_script_completes_commands_options_and_files(folder, capsys):
    script = folder / "rlhf.bash"
    script.write_text(rlhf(capsys, "completion", "bash")[1])
    (folder / "pipeline.toml").write_text(GOOD)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        quoted = " ".join(f"'{w}'" for w in words)
        probe = (f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
                 f"COMP_POINT={len(line)}; _shtab_rlhf; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        result = subprocess.run(["bash", "-c", probe], cwd=folder, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("rlhf", "val") == ["validate"]
    assert set(complete("rlhf", "validate", "--")) >= {"--set", "--json", "--help"}
    assert complete("rlhf", "completion", "") == ["bash", "zsh"]
    assert complete("rlhf", "validate", "pipe") == ["pipeline.toml"]


def _options(parser: argparse.ArgumentParser, path: str = "rlhf") -> Iterator[tuple[str, argparse.Action]]:
    """Every argument of every command, nested commands included, with the command it belongs to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_of_every_command_has_help():
    missing = sorted((path, (action.option_strings or [action.dest])[0])
                     for path, action in _options(cli.build_parser()) if not action.help)
    assert not missing, missing


def test_help_shows_defaults_worth_showing():
    [commands] = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    flat = {name: " ".join(sub.format_help().split()) for name, sub in commands.choices.items()}
    assert "0 for greedy (default: 0.8)" in flat["generate"]
    assert "sampling seed (default: 0)" in flat["generate"]  # a default of 0 is shown too
    assert "where to write it (default: pipeline.toml)" in flat["init"]
    assert "(default: False)" not in " ".join(flat.values())  # flags are not cluttered
    assert "(default: None)" not in " ".join(flat.values())
    assert "(default: [])" not in flat["run"]
    assert "--set STAGE.KEY=VALUE" in flat["run"] and "--set STAGE.KEY=VALUE" in flat["validate"]


# --- strict JSON ----------------------------------------------------------------------------------------


def test_emit_json_writes_non_finite_numbers_as_null():
    out = io.StringIO()
    headless.emit_json({"a": math.nan, "b": [math.inf, {"c": -math.inf}], "d": (1.5, math.nan), "e": "inf"}, out)
    assert strict_json(out.getvalue()) == {"a": None, "b": [None, {"c": None}], "d": [1.5, None], "e": "inf"}


def test_a_diverged_metric_is_null_in_run_json_lines():
    # `rlhf run --json` prints each update through emit_json (headless.follow)
    out = io.StringIO()
    headless.emit_json(MetricsLogged(run_id=1, stage="sft", step=3, values={"train/loss": math.inf}).to_json(), out)
    assert strict_json(out.getvalue())["values"] == {"train/loss": None}


def test_metrics_and_status_json_give_null_for_nan_and_inf(tmp_path, capsys, open_engine):
    from tests.support import fake_spec

    engine = open_engine(tmp_path / "ws")
    run = asyncio.run(engine.submit(fake_spec(tmp_path), start=False))  # recorded, never started
    stage_id = engine.reads.list_stages(run_id=run.id)[0].id
    # A stage stores NaN as inf (SQLite has no NaN: StageContext.log_metrics); -inf as it is.
    engine.store.add_metrics([
        {"run_id": run.id, "stage_id": stage_id, "key": "train/loss", "step": step, "value": value, "wall_time": 1.0}
        for step, value in ((1, 2.5), (2, math.inf), (3, -math.inf))
    ])
    ws = str(tmp_path / "ws")

    code, out, _ = rlhf(capsys, "-w", ws, "metrics", str(run.id), "--json")
    assert code == 0
    [series] = strict_json(out)
    assert [p["value"] for p in series["points"]] == [2.5, None, None]

    code, out, _ = rlhf(capsys, "-w", ws, "status", str(run.id), "--json")
    assert code == 0
    loss = strict_json(out)["stages"][0]["metrics"]["train/loss"]
    assert (loss["first"], loss["last"]) == (2.5, None)
