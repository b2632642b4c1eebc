"""The launch keys every stage has (strategy, accelerate_config, machines, machine_rank,
main_process_ip, main_process_port): what a spec may say, and the one line it gets when
it says something else. What a machine can run is checked when the stage starts
(tests/engine/test_launch_strategy.py), so a spec for a GPU cluster validates anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.spec.pipeline import stage_spec_from_dict


def stage(settings: str) -> str:
    return f'[stages.sft]\nkind = "pretrain"\n{settings}\n'


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            'strategy = "fsdp2"',
            "field 'strategy': expected 'ddp', 'fsdp', 'deepspeed-zero2' or 'deepspeed-zero3', "
            "got the string 'fsdp2'; did you mean 'fsdp'?",
            id="unknown_strategy",
        ),
        pytest.param(
            "strategy = 3",
            "field 'strategy': expected 'ddp', 'fsdp', 'deepspeed-zero2' or 'deepspeed-zero3', got the integer 3",
            id="strategy_not_a_string",
        ),
        pytest.param(
            'strategy = "deepspeed-zero3"\naccelerate_config = "/etc/accelerate/fsdp.yaml"',
            "field 'accelerate_config': strategy 'deepspeed-zero3' and an accelerate config file both say how "
            "the processes share the work; give one of them, got the string '/etc/accelerate/fsdp.yaml'",
            id="strategy_and_config_file",
        ),
        pytest.param(
            'accelerate_config = "/etc/accelerate/fsdp.toml"',
            "field 'accelerate_config': expected an accelerate config file (.yaml, .yml or .json, as "
            "`accelerate config` writes it), got the string '/etc/accelerate/fsdp.toml'",
            id="config_file_of_another_format",
        ),
        pytest.param(
            "machines = 2",
            "field 'machines': more than one machine needs main_process_ip, the address of the machine of "
            "rank 0, got the integer 2",
            id="machines_without_main_process_ip",
        ),
        pytest.param(
            'machines = 2\nmain_process_ip = "10.0.0.1"\nmachine_rank = 2',
            "field 'machine_rank': must be below machines (2; ranks count from 0), got the integer 2",
            id="machine_rank_not_below_machines",
        ),
        pytest.param(
            "machine_rank = 1",
            "field 'machine_rank': must be below machines (1; ranks count from 0), got the integer 1",
            id="machine_rank_on_one_machine",
        ),
        pytest.param("machines = 0", "field 'machines': must be at least 1, got 0", id="no_machines"),
        pytest.param(
            'machines = 2\nmain_process_ip = "http://10.0.0.1"',
            "field 'main_process_ip': expected the host name or IP address of the machine of rank 0, "
            "got the string 'http://10.0.0.1'",
            id="address_with_a_scheme",
        ),
        pytest.param(
            'main_process_ip = ""',
            "field 'main_process_ip': expected the host name or IP address of the machine of rank 0, "
            "got the string ''",
            id="empty_address",
        ),
        pytest.param(
            "main_process_port = 70000", "field 'main_process_port': must be at most 65535, got 70000",
            id="port_out_of_range",
        ),
    ],
)
def test_bad_launch_keys_get_one_line_naming_the_field(specs, settings: str, message: str) -> None:
    line = specs.problem(stage(settings))
    assert line.endswith(f"stage 'sft', {message}"), line


def test_a_multi_machine_deepspeed_spec_validates_on_a_machine_without_deepspeed(specs) -> None:
    # deepspeed is not installed here and there is no GPU: both are the run's business, not the spec's.
    spec = specs.load(stage(
        'strategy = "deepspeed-zero3"\nprocesses = 8\nmachines = 2\nmachine_rank = 1\n'
        'main_process_ip = "node-0.cluster"\nmain_process_port = 29600'
    ))
    stored = spec.to_dict()["sft"]
    assert {k: stored[k] for k in ("strategy", "processes", "machines", "machine_rank", "main_process_ip",
                                   "main_process_port", "accelerate_config")} == {
        "strategy": "deepspeed-zero3", "processes": 8, "machines": 2, "machine_rank": 1,
        "main_process_ip": "node-0.cluster", "main_process_port": 29600, "accelerate_config": None,
    }
    # The worker validates the stored spec again: it must pass unchanged.
    assert stage_spec_from_dict(stored) == spec.stages["sft"]


def test_a_config_file_under_home_is_stored_absolute(specs) -> None:
    spec = specs.load(stage('accelerate_config = "~/accelerate/fsdp.yaml"'))
    stored = spec.to_dict()["sft"]["accelerate_config"]
    assert stored == str(Path.home() / "accelerate" / "fsdp.yaml")
    assert stage_spec_from_dict(spec.to_dict()["sft"]).accelerate_config == stored


def test_defaults_launch_one_plain_process(specs) -> None:
    stored = specs.load(stage("")).to_dict()["sft"]
    assert (stored["processes"], stored["strategy"], stored["accelerate_config"], stored["machines"],
            stored["machine_rank"], stored["main_process_ip"], stored["main_process_port"]) == (
        1, "ddp", None, 1, 0, None, None)


def test_a_stage_stored_before_the_launch_keys_existed_still_validates() -> None:
    old = {"kind": "pretrain", "from": "builtin:llama-4m", "processes": 2}
    assert stage_spec_from_dict(old).strategy == "ddp"


def test_a_relative_accelerate_config_is_read_beside_the_spec(tmp_path) -> None:
    from engine import parse_spec

    spec = parse_spec('[stages.pretrain]\nkind = "pretrain"\naccelerate_config = "configs/fsdp.yaml"\n',
                      source="p.toml", base_dir=tmp_path)
    assert spec.stages["pretrain"].accelerate_config == str(tmp_path.resolve() / "configs" / "fsdp.yaml")
