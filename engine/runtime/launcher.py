"""Starting processes: the detached run process, and each stage's worker.

A run process (`python -m engine.runtime.supervisor`) is started in a new session,
so it survives the terminal closing, an SSH hang-up and the console quitting.

A stage starts through `accelerate launch` when it needs more than one plain
process: `processes > 1`, `machines > 1`, a `strategy` other than ddp or an
`accelerate_config` file (`LaunchSettings`). The spec's keys become
accelerate's own flags; on a CPU-only machine `--multi_gpu` is what really
starts N gloo processes (with `--cpu`, or a MULTI_CPU config file, accelerate
silently starts one). What this machine cannot run (FSDP or DeepSpeed
without CUDA, DeepSpeed without its package, a config file that is not
there) is refused here, when the stage starts, with one line: accelerate 1.16
would otherwise fall back to DDP, or to N processes that never meet, without
a word.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # accelerate's own dependency; no stubs installed

import engine
from engine.errors import StageFailed
from engine.runtime.checkpoints import OptimizerStateLost, newest_whole_checkpoint

#: the folder holding the engine/, store/ and console/ packages
PROJECT_ROOT = Path(engine.__file__).resolve().parent.parent



def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for engine processes: importable packages, no progress bars."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Our processes start with `python -m` in the workspace or a stage folder, which Python would put
    # first on the import path: a `psutil.py` planted in a shared workspace would run as whoever started
    # the run. Safe-path mode (3.11+) leaves the working folder out, in every Python process below too.
    env["PYTHONSAFEPATH"] = "1"
    # Library progress bars would land in the log as thousands of redraws.
    env["TQDM_DISABLE"] = "1"
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if extra:
        env.update(extra)
    return env


def spawn_supervisor(workspace_root: Path, run_id: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the detached process that executes one run."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.runtime.supervisor", "--workspace", str(workspace_root),
             "--run", str(run_id)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workspace_root,
            env=child_env(),
            start_new_session=True,  # its own session: no SIGHUP, no Ctrl-C from our terminal
            close_fds=True,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: port torch.distributed's rendezvous listens on when the machines must agree on one
DEFAULT_MULTI_MACHINE_PORT = 29500

#: strategy -> accelerate launch flags. FSDP2 (accelerate's recommended version) wraps each
#: transformer block (the model's own `_no_split_modules`) and saves full state dicts, so that
#: checkpoints and final/ stay plain weights. ZeRO-3 gathers 16-bit weights when it saves.
STRATEGY_FLAGS: dict[str, tuple[str, ...]] = {
    "ddp": ("--multi_gpu",),
    "fsdp": (
        "--use_fsdp", "--fsdp_version", "2",
        "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type", "FULL_STATE_DICT",
    ),
    "deepspeed-zero2": ("--use_deepspeed", "--zero_stage", "2"),
    "deepspeed-zero3": ("--use_deepspeed", "--zero_stage", "3", "--zero3_save_16bit_model", "true"),
}

#: what an accelerate config file's `distributed_type` asks for, in our strategies' terms
_CONFIG_STRATEGY = {"FSDP": "fsdp", "DEEPSPEED": "deepspeed"}


#: kinds that cannot run under some strategies yet, and why (checked when the stage starts)
KIND_LIMITS: dict[str, tuple[frozenset[str], str]] = {
    "ppo": (frozenset({"fsdp", "deepspeed"}), "it prepares two models (policy and value network) with one "
            "optimizer, which accelerate's FSDP2 and DeepSpeed refuse, and FSDP1 cannot answer the eval prompts "
            "on one process; use ddp"),
}


@dataclass(frozen=True)
class LaunchSettings:
    """How a stage's processes start: the launch keys of its spec (StageSpec)."""

    kind: str = ""
    processes: int = 1  # on this machine
    strategy: str = "ddp"
    accelerate_config: str | None = None
    machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LaunchSettings:
        """From a stage's stored spec; runs stored before a key existed get its default."""
        defaults = cls()
        return cls(**{name: spec.get(name, getattr(defaults, name)) for name in cls.__dataclass_fields__})

    @property
    def total_processes(self) -> int:
        """accelerate's --num_processes counts every machine's."""
        return self.processes * self.machines

    @property
    def through_accelerate(self) -> bool:
        return self.total_processes > 1 or self.strategy != "ddp" or self.accelerate_config is not None


def worker_command(
    *, workspace_root: Path, stage_id: int, device_kind: str, resume_from: Path | None,
    processes: int = 1, launch: LaunchSettings | None = None,
) -> list[str]:
    """The command line that runs one stage: a plain worker, or its processes
    through accelerate. `launch` holds the spec's launch keys (`processes`
    alone is shorthand for the rest at their defaults). Raises StageFailed,
    one line, for settings this machine cannot run."""
    launch = launch if launch is not None else LaunchSettings(processes=processes)
    worker_args = ["--workspace", str(workspace_root), "--stage-id", str(stage_id)]
    if resume_from is not None:
        worker_args += ["--resume-from", str(resume_from)]
    if not launch.through_accelerate:
        return [sys.executable, "-m", "engine.runtime.worker", *worker_args]
    return [*accelerate_launch(launch, device_kind), "-m", "engine.runtime.worker", *worker_args]


def accelerate_launch(launch: LaunchSettings, device_kind: str) -> list[str]:
    """`python -m accelerate.commands.launch` and its flags, up to the script
    it runs. Checks first that this machine can run it (StageFailed if not)."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config is None:
        strategy = launch.strategy
        _check_runnable(f"strategy {strategy!r}", strategy, launch.kind, device_kind)
        command += STRATEGY_FLAGS[strategy]
    else:
        config = _read_accelerate_config(launch.accelerate_config)
        kind = str(config.get("distributed_type", "NO"))
        strategy = _CONFIG_STRATEGY.get(kind, "ddp")
        _check_runnable(f"accelerate_config {launch.accelerate_config} (distributed_type {kind})",
                        strategy, launch.kind, device_kind)
        # The file decides the strategy. One that shares nothing (NO, MULTI_CPU, MULTI_GPU) gets
        # --multi_gpu, the one flag that really starts N processes on a CPU (a MULTI_CPU file
        # alone starts one); FSDP and DeepSpeed files get none, so accelerate reads theirs.
        command += ["--config_file", launch.accelerate_config]
        if strategy == "ddp":
            command += ["--multi_gpu"]
    if launch.total_processes == 1 and "--multi_gpu" in command:
        command.remove("--multi_gpu")  # accelerate refuses it with one process, which needs no flag
    # Always ours, whatever a config file says: the spec sizes the stage (its device slots
    # are leased for `processes`), and the stage picks its precision and compilation itself.
    command += [
        "--num_processes", str(launch.total_processes),
        "--num_machines", str(launch.machines),
        "--mixed_precision", "no",
        "--dynamo_backend", "no",
    ]
    if launch.machines > 1:
        command += [
            "--machine_rank", str(launch.machine_rank),
            "--main_process_ip", launch.main_process_ip or "",
            "--main_process_port", str(launch.main_process_port or DEFAULT_MULTI_MACHINE_PORT),
        ]
        if strategy.startswith("deepspeed"):
            # Each machine starts its own processes (`rlhf run` there), as torchrun does;
            # DeepSpeed's default (pdsh) would log in to the others from the main machine.
            command += ["--deepspeed_multinode_launcher", "standard"]
    else:
        command += ["--main_process_port", str(launch.main_process_port or free_port())]
    if device_kind == "cuda":
        # CUDA_VISIBLE_DEVICES already narrows the GPUs to the leased slots.
        command += ["--gpu_ids", "all"]
    return command


def _read_accelerate_config(path: str) -> dict[str, Any]:
    """The config file's settings (accelerate reads .json as JSON, the rest as YAML; YAML reads both)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StageFailed(f"accelerate_config: no such file: {path}") from None
    except OSError as exc:
        raise StageFailed(f"accelerate_config: cannot read {path} ({exc.strerror})") from None
    try:
        settings = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise StageFailed(f"accelerate_config: {path} is not valid YAML{where}") from None
    if not isinstance(settings, dict):
        raise StageFailed(f"accelerate_config: expected settings (key: value lines) in {path}, "
                          "as `accelerate config` writes them")
    return settings


def _check_runnable(named: str, strategy: str, kind: str, device_kind: str) -> None:
    """One line naming what this machine (or this kind of stage) lacks for the strategy, if anything."""
    family = "deepspeed" if strategy.startswith("deepspeed") else strategy
    limited, why = KIND_LIMITS.get(kind, (frozenset(), ""))
    if family in limited:
        raise StageFailed(f"{named}: a {kind} stage cannot run under it yet: {why}")
    if family == "fsdp" and device_kind != "cuda":
        # accelerate 1.16 turns FSDP on only for GPU process groups: on a CPU it trains with
        # plain DDP (or, without --cpu, with N processes that never meet) and says nothing.
        raise StageFailed(f"{named} needs CUDA GPUs (this stage got the {device_kind.upper()}): on a CPU "
                          "accelerate would quietly train with plain DDP instead")
    if family == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        # DeepSpeed itself runs on a CPU too (its CPU accelerator, over gloo).
        raise StageFailed(f"{named} needs the deepspeed package, which is not installed here "
                          "(pip install deepspeed)")


def find_resume_checkpoint(checkpoints_dir: Path, *, weights_only: bool = False,
                           skipped: Callable[[Path, str], None] | None = None) -> Path | None:
    """The newest whole `checkpoint-STEP` folder, if any (engine/runtime/checkpoints.py:
    its files present and parsing, optimizer state included unless `weights_only`);
    newer torn ones go to `skipped`. StageFailed where only weights without their
    optimizer state are left and the resume is not of the weights only."""
    try:
        return newest_whole_checkpoint(checkpoints_dir, weights_only=weights_only, skipped=skipped)
    except OptimizerStateLost as exc:
        raise StageFailed(str(exc)) from None
