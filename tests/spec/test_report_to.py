"""`report_to` (issue 15): the trackers a stage sends its metrics to, per stage or
for every stage from a [defaults] table; a tracker whose package is missing is
exit 2 before anything runs."""

from __future__ import annotations

import pytest

from engine.spec import fields
from engine.spec.pipeline import stage_spec_from_dict

PRE = """
[stages.pre]
kind = "pretrain"
"""
TWO = PRE + """
[stages.more]
kind = "pretrain"
from = "pre"
"""


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The tracker packages this machine has, as the spec sees it: all three unless a test removes one."""
    packages = {"tensorboard", "trackio", "wandb"}
    monkeypatch.setattr(fields, "_package_installed", lambda package: package in packages)
    return packages


def _problems(specs, text: str) -> list[str]:
    return [line.removeprefix(f"{specs.root}/") for line in specs.problems(text)]


def test_a_stage_names_its_trackers_and_the_stored_spec_keeps_them(specs, installed) -> None:
    spec = specs.load(PRE + 'report_to = ["tensorboard", "wandb"]\n')
    assert spec.stages["pre"].report_to == ["tensorboard", "wandb"]
    assert stage_spec_from_dict(spec.to_dict()["pre"]).report_to == ["tensorboard", "wandb"]


def test_by_default_a_stage_reports_to_the_store_only(specs) -> None:
    assert specs.load(PRE).stages["pre"].report_to == []


def test_every_stage_takes_the_defaults_table_unless_it_sets_its_own(specs, installed) -> None:
    spec = specs.load('[defaults]\nreport_to = ["trackio"]\n' + TWO + "report_to = []\n")
    assert spec.stages["pre"].report_to == ["trackio"]
    assert spec.stages["more"].report_to == []  # its own, even empty, wins
    assert spec.to_dict()["pre"]["report_to"] == ["trackio"]  # stored per stage: the worker reads it there


def test_a_missing_tracker_package_is_named_with_how_to_install_it(specs, installed) -> None:
    installed.discard("wandb")
    assert _problems(specs, PRE + 'report_to = ["tensorboard", "wandb"]\n') == [
        "pipeline.toml: stage 'pre', field 'report_to.1': not installed here (pip install wandb, or every "
        "tracker: pip install 'rlhf-console[trackers]'), got the string 'wandb'",
    ]


def test_bad_report_to_values_each_get_a_line(specs, installed) -> None:
    problems = _problems(specs, '[defaults]\nreport_to = ["mlflow"]\nreport_too = 1\n' + TWO
                         + 'report_to = ["wandb", "wandb"]\n')
    assert problems == [
        "pipeline.toml: field 'defaults.report_to.0': expected 'tensorboard', 'trackio' or 'wandb', "
        "got the string 'mlflow'",
        "pipeline.toml: field 'defaults.report_too': not a setting [defaults] takes; did you mean "
        "'report_to'? (it takes: report_to)",
        "pipeline.toml: stage 'more', field 'report_to': names a tracker twice, got an array",
    ]


def test_defaults_must_be_a_table(specs) -> None:
    assert _problems(specs, 'defaults = "tensorboard"\n' + PRE) == [
        "pipeline.toml: field 'defaults': expected a [defaults] table, got the string 'tensorboard'",
    ]


def test_a_stored_table_is_not_checked_against_this_machine_s_packages(specs, installed) -> None:
    # Submitted where wandb was installed; resumed after it was removed: the worker's reading of the
    # stored table must pass, so that the stage's own start says what to install in one line.
    stored = specs.load(PRE + 'report_to = ["wandb"]\n').to_dict()["pre"]
    installed.discard("wandb")
    assert stage_spec_from_dict(stored).report_to == ["wandb"]
    # a new spec is still refused
    assert _problems(specs, PRE + 'report_to = ["wandb"]\n')[0].endswith("got the string 'wandb'")
