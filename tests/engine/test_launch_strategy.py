"""How a stage's launch keys become a command line (engine/runtime/launcher.py), and
what this machine refuses to start. The commands are built, never run, except in the
tests marked slow: a refusal recorded by a real run, and two "machines" meeting over
gloo on this one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest
from accelerate.commands.launch import launch_command_parser

from engine import Engine
from engine.errors import StageFailed
from engine.runtime import launcher
from engine.runtime.launcher import (
    STRATEGY_FLAGS,
    LaunchSettings,
    accelerate_launch,
    child_env,
    free_port,
    worker_command,
)
from engine.spec.fields import StageSpec
from store import RunStatus, StageStatus

from .conftest import fake_pipeline

PYTHON_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
WORKER = ["-m", "engine.runtime.worker", "--workspace", "/ws", "--stage-id", "7"]


def command(device_kind: str = "cpu", **keys: object) -> list[str]:
    settings = LaunchSettings(**keys)  # type: ignore[arg-type]  # keys of the dataclass, by name
    return worker_command(workspace_root=Path("/ws"), stage_id=7, device_kind=device_kind, resume_from=None,
                          launch=settings)


def flags(full: list[str]) -> list[str]:
    """The launcher's flags: between `python -m accelerate.commands.launch` and the worker."""
    assert full[:3] == PYTHON_LAUNCH and full[-len(WORKER):] == WORKER, full
    return full[3:-len(WORKER)]


def accelerate_reads(full: list[str]):
    """The command as accelerate's own parser reads it: every flag must be one it knows."""
    return launch_command_parser().parse_args(full[3:])


@pytest.fixture
def deepspeed_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A findable `deepspeed` package (the launcher only looks it up, never imports it)."""
    (tmp_path / "deepspeed").mkdir()
    (tmp_path / "deepspeed" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_the_strategies_are_the_specs() -> None:
    assert tuple(STRATEGY_FLAGS) == get_args(StageSpec.model_fields["strategy"].annotation)


def test_one_process_is_a_plain_worker() -> None:
    assert command(processes=1) == [sys.executable, *WORKER]


def test_ddp_on_the_cpu() -> None:
    full = command(processes=2, main_process_port=29555)
    assert flags(full) == [
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "29555",
    ]
    read = accelerate_reads(full)
    assert read.multi_gpu and not read.cpu and read.num_processes == 2 and read.module
    assert read.training_script == "engine.runtime.worker"


def test_a_free_port_when_none_is_given() -> None:
    got = flags(command(processes=2))
    port = int(got[got.index("--main_process_port") + 1])
    assert 1024 <= port <= 65535


def test_ddp_on_gpus_takes_all_the_leased_ones() -> None:
    # CUDA_VISIBLE_DEVICES already narrows them to the stage's lease.
    assert flags(command("cuda", processes=4, main_process_port=29555))[-2:] == ["--gpu_ids", "all"]


def test_fsdp_on_gpus() -> None:
    full = command("cuda", processes=4, strategy="fsdp", main_process_port=29555)
    assert flags(full) == [
        "--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type", "FULL_STATE_DICT",
        "--num_processes", "4", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "29555", "--gpu_ids", "all",
    ]
    read = accelerate_reads(full)
    assert read.use_fsdp and not read.multi_gpu and read.fsdp_version == "2"


def test_fsdp_with_one_gpu_still_goes_through_accelerate() -> None:
    got = flags(command("cuda", processes=1, strategy="fsdp", main_process_port=29555))
    assert got[0] == "--use_fsdp" and got[got.index("--num_processes") + 1] == "1"


def test_fsdp_on_the_cpu_is_refused() -> None:
    # Measured: accelerate 1.16 under --use_fsdp on this CPU trains with plain DDP and says nothing.
    with pytest.raises(StageFailed) as refused:
        command(processes=2, strategy="fsdp")
    assert str(refused.value) == (
        "strategy 'fsdp' needs CUDA GPUs (this stage got the CPU): on a CPU accelerate would quietly "
        "train with plain DDP instead"
    )


@pytest.mark.parametrize("strategy", ["deepspeed-zero2", "deepspeed-zero3"])
def test_deepspeed_without_its_package_is_refused(strategy: str) -> None:
    if launcher.importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(StageFailed) as refused:
        command("cuda", processes=2, strategy=strategy)
    assert str(refused.value) == (
        f"strategy {strategy!r} needs the deepspeed package, which is not installed here (pip install deepspeed)"
    )


@pytest.mark.usefixtures("deepspeed_installed")
def test_deepspeed_zero_stages() -> None:
    zero2 = command("cuda", processes=2, strategy="deepspeed-zero2", main_process_port=29555)
    assert flags(zero2)[:3] == ["--use_deepspeed", "--zero_stage", "2"]
    read = accelerate_reads(zero2)
    assert read.use_deepspeed and read.zero_stage == 2 and not read.multi_gpu

    zero3 = command("cpu", processes=2, strategy="deepspeed-zero3", main_process_port=29555)  # DeepSpeed runs on CPUs
    assert flags(zero3)[:5] == ["--use_deepspeed", "--zero_stage", "3", "--zero3_save_16bit_model", "true"]
    assert accelerate_reads(zero3).zero_stage == 3


def test_several_machines() -> None:
    got = flags(command("cuda", processes=8, machines=2, machine_rank=1, main_process_ip="10.0.0.1"))
    assert got == [
        "--multi_gpu", "--num_processes", "16", "--num_machines", "2", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--machine_rank", "1", "--main_process_ip", "10.0.0.1",
        "--main_process_port", "29500", "--gpu_ids", "all",
    ]
    read = accelerate_reads([*PYTHON_LAUNCH, *got, *WORKER])
    assert (read.num_processes, read.num_machines, read.machine_rank, read.main_process_ip) == (16, 2, 1, "10.0.0.1")


def test_one_process_on_each_of_two_machines_is_still_multi_process() -> None:
    got = flags(command(processes=1, machines=2, main_process_ip="node-0", main_process_port=29600))
    assert got[:3] == ["--multi_gpu", "--num_processes", "2"] and got[-2:] == ["--main_process_port", "29600"]


@pytest.mark.usefixtures("deepspeed_installed")
def test_deepspeed_across_machines_lets_each_machine_start_its_own_processes() -> None:
    got = flags(command("cuda", processes=4, machines=2, main_process_ip="node-0", strategy="deepspeed-zero3"))
    assert got[-4:] == ["--deepspeed_multinode_launcher", "standard", "--gpu_ids", "all"]


# --- accelerate config files -----------------------------------------------------------


def config_file(tmp_path: Path, text: str, name: str = "accelerate.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_config_file_decides_the_strategy_and_the_spec_the_processes(tmp_path: Path) -> None:
    path = config_file(tmp_path, "distributed_type: FSDP\nnum_processes: 8\nfsdp_config:\n  fsdp_version: 2\n")
    full = command("cuda", processes=2, accelerate_config=path, main_process_port=29555)
    assert flags(full) == [
        "--config_file", path, "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "29555", "--gpu_ids", "all",
    ]
    read = accelerate_reads(full)
    assert read.config_file == path and read.num_processes == 2 and not read.multi_gpu


def test_a_multi_cpu_config_file_gets_the_flag_that_really_starts_the_processes(tmp_path: Path) -> None:
    # Alone, a MULTI_CPU file makes accelerate start one process on a CPU machine.
    path = config_file(tmp_path, "distributed_type: MULTI_CPU\nnum_processes: 2\n")
    assert flags(command(processes=2, accelerate_config=path, main_process_port=29555))[:3] == [
        "--config_file", path, "--multi_gpu",
    ]
    assert "--multi_gpu" not in command(processes=1, accelerate_config=path)


def test_a_json_config_file_is_read_too(tmp_path: Path) -> None:
    path = config_file(tmp_path, json.dumps({"distributed_type": "FSDP"}), "accelerate.json")
    with pytest.raises(StageFailed, match=r"\(distributed_type FSDP\) needs CUDA GPUs"):
        command(processes=2, accelerate_config=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "accelerate_config: no such file: {path}"),
        ("distributed_type: [FSDP\n", "accelerate_config: {path} is not valid YAML (line 2)"),
        ("- FSDP\n", "accelerate_config: expected settings (key: value lines) in {path}, as `accelerate config` "
                     "writes them"),
        ("distributed_type: FSDP\n", "accelerate_config {path} (distributed_type FSDP) needs CUDA GPUs (this stage "
                                     "got the CPU): on a CPU accelerate would quietly train with plain DDP instead"),
    ],
    ids=["missing", "not_yaml", "not_settings", "fsdp_on_the_cpu"],
)
def test_config_files_this_machine_cannot_use(tmp_path: Path, text: str | None, message: str) -> None:
    path = config_file(tmp_path, text) if text is not None else str(tmp_path / "nowhere.yaml")
    with pytest.raises(StageFailed) as refused:
        command(processes=2, accelerate_config=path)
    assert str(refused.value) == message.format(path=path)


# --- kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed-zero3"])
def test_ppo_runs_under_ddp_only(strategy: str) -> None:
    with pytest.raises(StageFailed) as refused:
        command("cuda", kind="ppo", processes=2, strategy=strategy)
    assert str(refused.value).startswith(f"strategy {strategy!r}: a ppo stage cannot run under it yet: it prepares "
                                         "two models (policy and value network)")
    assert flags(command(kind="ppo", processes=2, main_process_port=29555))[0] == "--multi_gpu"


def test_settings_from_a_stored_spec() -> None:
    old = {"kind": "sft", "processes": 2}  # stored before the launch keys existed
    assert LaunchSettings.from_spec(old) == LaunchSettings(kind="sft", processes=2)
    new = {**old, "strategy": "fsdp", "machines": 2, "machine_rank": 1, "main_process_ip": "n0",
           "main_process_port": 1234, "accelerate_config": None, "seed": 3}
    assert LaunchSettings.from_spec(new) == LaunchSettings(
        kind="sft", processes=2, strategy="fsdp", machines=2, machine_rank=1, main_process_ip="n0",
        main_process_port=1234)


# --- real processes ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_run_whose_strategy_this_machine_cannot_run_fails_with_that_line(
    engine: Engine, tmp_path: Path,
) -> None:
    run = await engine.submit(fake_pipeline(tmp_path, steps=3, processes=2, strategy="fsdp"))
    deadline = time.monotonic() + 60
    while (final := await engine.get_run(run.id)).status.is_active:
        assert time.monotonic() < deadline, "the run never ended"
        await asyncio.sleep(0.1)
    assert final.status == RunStatus.FAILED
    assert final.error == ("stage 'work': strategy 'fsdp' needs CUDA GPUs (this stage got the CPU): on a CPU "
                           "accelerate would quietly train with plain DDP instead")
    stage = engine.store.list_stages(run_id=run.id)[0]
    assert stage.status == StageStatus.FAILED and stage.pid is None  # no process was started


PROBE = """\
import faulthandler, json, torch
from accelerate import Accelerator
# A hung probe prints where it hangs and exits, so a failure says more than "timed out".
faulthandler.dump_traceback_later(100, exit=True)
accelerator = Accelerator(cpu=True)
total = accelerator.reduce(torch.tensor([float(accelerator.process_index + 1)]), reduction="sum")
print(json.dumps({"rank": accelerator.process_index, "world": accelerator.num_processes, "total": total.item()}))
# As engine.runtime.worker does: left to interpreter shutdown, gloo's threads can abort a rank
# ("terminate called without an active exception"); its launcher then exits at once and the
# other waits out torch elastic's 300 s exit barrier (the hang CI saw, reproduced here).
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_two_machines_meet_through_accelerates_own_flags(tmp_path: Path) -> None:
    """Two launchers on this host, as two machines would start them (`machines = 2`,
    each its own machine_rank, the main one's address), meet over gloo."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    port = free_port()
    env = child_env({"OMP_NUM_THREADS": "1"})
    # Output to files, not pipes: reading one launcher's pipe while the other's fills up would
    # block that one's writes, and the first launcher's exit barrier waits for it (a 240 s hang, seen once).
    outputs = [(tmp_path / f"machine{rank}.out", tmp_path / f"machine{rank}.err") for rank in (0, 1)]
    machines = []
    for rank, (out_path, err_path) in enumerate(outputs):
        with out_path.open("w") as out, err_path.open("w") as err:
            machines.append(subprocess.Popen(
                [*accelerate_launch(LaunchSettings(processes=1, machines=2, machine_rank=rank,
                                                   main_process_ip="127.0.0.1", main_process_port=port), "cpu"),
                 str(probe)],
                env=env, stdout=out, stderr=err, text=True, start_new_session=True,
            ))
    def both_logs() -> str:
        return "\n".join(f"--- machine {rank} {path.suffix[1:]}:\n{path.read_text()[-2000:]}"
                         for rank, paths in enumerate(outputs) for path in paths)

    reports = []
    deadline = time.monotonic() + 150
    try:
        for machine, (out_path, _) in zip(machines, outputs, strict=True):
            try:
                machine.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the two launchers did not finish within 150 s\n{both_logs()}")
            assert machine.returncode == 0, both_logs()
            reports.append(json.loads(out_path.read_text().strip().splitlines()[-1]))
    finally:
        for machine in machines:
            if machine.poll() is None:
                os.killpg(machine.pid, signal.SIGKILL)  # our own launcher's group, started above
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world"] == 2 and r["total"] == 3.0 for r in reports)
