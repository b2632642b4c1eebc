"""The `rlhf` command as scripts use it: exit codes, JSON, messages, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hangup import default_sighup
from tests.support import FAKE_STAGE_PLUGINS

RLHF = str(Path(sys.executable).with_name("rlhf"))

# slow: every test starts `rlhf` processes, and most of them real runs
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The shared `cli_env` (tests/console/conftest.py), with runs of the fake stage kind: the run
    processes import it from this checkout."""
    checkout = str(Path(__file__).resolve().parents[2])
    return {**cli_env, "RLHF_STAGE_PLUGINS": FAKE_STAGE_PLUGINS, "PYTHONPATH": checkout}


def rlhf(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RLHF, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=90)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_run_prints_json_lines_and_exits_0(tmp_path: Path, env: dict[str, str]) -> None:
    spec = write(tmp_path / "ok.toml", '[stages.work]\nkind = "fake"\nsteps = 6\n')
    result = rlhf("run", str(spec), "--json", env=env)

    assert result.returncode == 0, result.stderr
    updates = [json.loads(line) for line in result.stdout.splitlines()]
    assert updates[-1] == {"type": "RunFinished", "run_id": 1, "status": "succeeded", "error": None}
    assert {"LifecycleEvent", "StageProgress", "MetricsLogged"} <= {u["type"] for u in updates}

    listed = json.loads(rlhf("ls", "--json", env=env).stdout)
    assert [(r["name"], r["status"]) for r in listed] == [("ok", "succeeded")]
    status = json.loads(rlhf("status", "ok", "--json", env=env).stdout)
    assert status["stages"][0]["metrics"]["train/loss"]["last"] == pytest.approx(1 / 6)
    metrics = json.loads(rlhf("metrics", "1", "--key", "train/loss", "--json", env=env).stdout)
    assert [p["step"] for p in metrics[0]["points"]] == [1, 2, 3, 4, 5, 6]


def test_a_failed_run_exits_1_with_its_error(tmp_path: Path, env: dict[str, str]) -> None:
    spec = write(tmp_path / "bad.toml", '[stages.work]\nkind = "fake"\nsteps = 6\nfail_at = 2\n')
    result = rlhf("run", str(spec), env=env)
    assert result.returncode == 1
    assert "fake failure at step 2" in result.stdout


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[stages.work]\nkind = "fake"\nstepz = 3\n', ["spec.toml", "'work'", "'stepz'", "steps"]),
        ('[stages.work]\nkind = "fake"\nsteps = "3"\n', ["spec.toml", "'work'", "'steps'", "integer"]),
        ('[stages.a]\nkind = "pretrain"\nfrom = "nosuch"\n', ["spec.toml", "'a'", "'from'", "nosuch"]),
        ('[stages.a]\nkind = "pretrain"\ndata = "./missing.txt"\n', ["spec.toml", "'a'", "'data'", "missing.txt"]),
        (
            '[stages.a]\nkind = "pretrain"\nfrom = "b"\n[stages.b]\nkind = "pretrain"\nfrom = "a"\n',
            ["spec.toml", "cycle"],
        ),
        ('[stages.a]\nkind = "pretrain"\nmax_steps = \n', ["spec.toml", "line 3"]),
    ],
)
def test_a_rejected_spec_exits_2_and_writes_nothing(
    tmp_path: Path, env: dict[str, str], body: str, expected: list[str]
) -> None:
    spec = write(tmp_path / "spec.toml", body)
    result = rlhf("run", str(spec), env=env)

    assert result.returncode == 2
    assert result.stdout == ""
    for fragment in expected:
        assert fragment in result.stderr, result.stderr
    assert json.loads(rlhf("ls", "--json", env=env).stdout) == []


def test_unknown_runs_and_bad_commands_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    for args in (("status", "nosuch"), ("resume", "7"), ("cancel", "nosuch"), ("logs", "nosuch")):
        result = rlhf(*args, env=env)
        assert result.returncode == 2, args
        assert "nosuch" in result.stderr or "7" in result.stderr
    assert rlhf("frobnicate", env=env).returncode == 2


def test_init_writes_a_runnable_example_and_never_overwrites(tmp_path: Path, env: dict[str, str]) -> None:
    assert rlhf("init", env=env, cwd=tmp_path).returncode == 0
    text = (tmp_path / "pipeline.toml").read_text()
    assert "[stages." in text and "#" in text

    again = rlhf("init", env=env, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "pipeline.toml").read_text() == text


def test_log_text_is_shown_literally(tmp_path: Path, env: dict[str, str]) -> None:
    hostile = "[red]x[/red] [link=file:///etc/passwd]y[/link] \x1b[31mred\x1b[0m \x1b]0;title\x07"
    spec = write(tmp_path / "lit.toml", f'[stages.work]\nkind = "fake"\nsteps = 1\nsay = {json.dumps(hostile)}\n')
    assert rlhf("run", str(spec), env=env).returncode == 0

    shown = rlhf("logs", "lit", env=env).stdout
    assert "[red]x[/red] [link=file:///etc/passwd]y[/link]" in shown
    assert "\x1b" not in shown and "\x07" not in shown  # the terminal is never told to do anything
    assert "\\e[31mred\\e[0m" in shown


def test_workspace_flag_beats_the_environment(tmp_path: Path, env: dict[str, str]) -> None:
    spec = write(tmp_path / "ok.toml", '[stages.work]\nkind = "fake"\nsteps = 1\n')
    other = tmp_path / "other"
    assert rlhf("run", str(spec), "--workspace", str(other), "--detach", env=env).returncode == 0
    assert (other / "rlhf.db").exists()
    assert json.loads(rlhf("ls", "--json", env=env).stdout) == []
    assert len(json.loads(rlhf("-w", str(other), "ls", "--json", env=env).stdout)) == 1


def test_a_run_survives_sighup_of_the_shell_that_started_it(tmp_path: Path, env: dict[str, str]) -> None:
    # The shell gets its own session, like a login shell over SSH; it starts the run attached (not even
    # --detach) and we hang up on the whole session. What survives is the run process and its stage:
    # the process model, the same for every kind (the fake one here: training would add nothing).
    spec = write(tmp_path / "hup.toml", '[stages.work]\nkind = "fake"\nsteps = 40\nstep_seconds = 0.1\n')
    shell = subprocess.Popen(["bash", "-c", f"'{RLHF}' run '{spec}'; sleep 60"], env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=default_sighup)

    def state() -> dict | None:
        found = rlhf("status", "hup", "--json", env=env)
        return json.loads(found.stdout) if found.returncode == 0 else None

    deadline = time.monotonic() + 60
    while not ((now := state()) and now["stages"][0]["status"] == "running"):
        assert time.monotonic() < deadline, "the stage never started"
        time.sleep(0.2)
    os.killpg(shell.pid, signal.SIGHUP)
    assert shell.wait(timeout=10) != 0  # the shell and the attached CLI are gone

    deadline = time.monotonic() + 60
    while (now := state()) is None or now["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the run never ended"
        time.sleep(0.2)
    assert now["status"] == "succeeded", now
    assert now["stages"][0]["step"] == 40
