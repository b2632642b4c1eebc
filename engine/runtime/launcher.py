"""Starting processes: the detached run process, and each stage's worker.

A run process (`python -m engine.runtime.supervisor`) is started in a new session,
so it survives the terminal closing, an SSH hang-up and the console quitting.
Stages with `processes > 1` start through `accelerate launch`; on a CPU-only
machine `--multi_gpu` is what really starts N gloo processes (with `--cpu`
accelerate silently starts one).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import engine

#: the folder holding the engine/, store/ and console/ packages
PROJECT_ROOT = Path(engine.__file__).resolve().parent.parent

#: a checkpoint folder is complete once the Trainer wrote trainer_state.json (its last file)
CHECKPOINT_DONE_MARKER = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for engine processes: importable packages, no progress bars."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
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


def worker_command(
    *, workspace_root: Path, stage_id: int, processes: int, device_kind: str,
    resume_from: Path | None,
) -> list[str]:
    """The command line that runs one stage: a plain worker, or N through accelerate."""
    worker_args = ["--workspace", str(workspace_root), "--stage-id", str(stage_id)]
    if resume_from is not None:
        worker_args += ["--resume-from", str(resume_from)]
    if processes == 1:
        return [sys.executable, "-m", "engine.runtime.worker", *worker_args]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes", str(processes),
        "--num_machines", "1",
        "--mixed_precision", "no",  # the stage picks its precision itself
        "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
    ]
    if device_kind == "cuda":
        # CUDA_VISIBLE_DEVICES already narrows the GPUs to the leased slots.
        launch += ["--gpu_ids", "all"]
    return [*launch, "-m", "engine.runtime.worker", *worker_args]


def find_resume_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete `checkpoint-STEP` folder, if any."""
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for child in checkpoints_dir.iterdir():
        match = _CHECKPOINT_NAME.match(child.name)
        if match and (child / CHECKPOINT_DONE_MARKER).is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None
