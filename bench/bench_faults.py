"""Kill -9 at random moments, resume, and count what survived (issue #14's figures).

    .venv/bin/python bench/bench_faults.py [--kills 50] [--chains 2] [--seed 0]

Three parts run side by side, each in a workspace of its own, with real
processes started through the `rlhf` command (the parts share the machine's
cores; what is measured is what survives, not how fast):

1. **Pretraining.** A tiny `builtin:llama-1m` pretrain (`--max-steps`, a
   checkpoint every `--save-every` steps, crossing an epoch boundary) runs
   once uninterrupted: the reference. Then `--chains` chains of runs of the
   same spec are killed `--kills` times in all and resumed with
   `rlhf resume RUN --detach` after each kill. Several kills land in one run
   (kill, resume, kill again) and a chain starts a new run when one finishes,
   so 50 kills are a handful of runs, each killed several times. Half the
   kills land at a random moment of the stage process's life (one in five
   while it starts up, the rest while it trains), half while a checkpoint is
   being written: the bench polls the stage's `checkpoints/` folder, and when
   a `checkpoint-N` folder appears it waits a random part of a checkpoint's
   write time and kills the stage while `trainer_state.json` (written last)
   is still missing. A kill counts as mid-checkpoint only when, after the
   process died, a folder written in that leg lacks `trainer_state.json`.
   What is killed: the stage process (most), the stage and the run process
   together, or (random moments only) the run process alone, after which the
   stage notices, saves and stops while the bench resumes at once. Each run
   must end succeeded at `--max-steps` with every step's `train/loss` and
   `train/learning_rate` stored once (every series is checked for a step
   stored twice) and equal to the reference's (`--rel-tol`).
2. **A judge mid-batch.** A rank stage with `judge = "demo"` over a stored
   batch (demo-task prompts, three responses each) is killed after a random
   number of fresh judgements (plus up to 15 ms, so some kills land between
   claiming an item and committing its verdict) and resumed, until the batch
   is done; then the next batch. Each batch must end with one live judgement
   per item by `judge:demo`, no row superseded or duplicated, every judgement
   seen in the store after a kill still there, verdict counts matching and no
   claim left.
3. **The rank console.** Two annotators rank one batch (`needed = 2`) at the
   same time, each in the console's rank screen in a child process
   (tests/console/rank_runner.py, which prints a line per judgement the screen
   reported committed); each is killed -9 after a random number of judgements
   (and a random part of the next one) and started again, until the batch is
   done. Every reported judgement must be in the store as reported, at most
   one unreported row per kill (the one in flight), no item judged twice by
   one annotator, the batch complete and no claim left.

The table at the end gives the counts, the command, the wall time and the
load average while it ran; the exit code is 0 only when every figure holds.
At the defaults it takes about 12 minutes on 2 cores with little else running
(16.8 min measured at a load average of 6.6): the pretraining part is the
longest, since every kill costs a new stage process (15-20 s of imports,
data and model before its first step on a loaded 2-core machine). Processes are ended only by the pids this
bench started or read from its own workspaces.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.demo.task import generate_tasks  # noqa: E402  torch-free
from store import open_workspace  # noqa: E402

RLHF = str(Path(sys.executable).with_name("rlhf"))
TERMINAL = {"succeeded", "failed", "crashed", "cancelled"}
DONE_MARKER = "trainer_state.json"  # what a Trainer checkpoint writes last

PRETRAIN_SPEC = """\
name = "faults"
[stages.pre]
kind = "pretrain"
from = "builtin:llama-1m"
data = "builtin:stdlib-docs"
max_documents = {documents}
block_size = 64
batch_size = 8
learning_rate = 3e-3
warmup_steps = 5
eval_every = 100000
eval_batches = 2
max_steps = {max_steps}
save_every = {save_every}
"""

RANK_SPEC = """\
name = "judge"
[stages.rank]
kind = "rank"
batch = "{batch}"
judge = "demo"
"""


# --- plumbing -------------------------------------------------------------------------------


def rlhf(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RLHF, *args], env=env, capture_output=True, text=True, timeout=timeout)


class Reader:
    """Read-only queries on a workspace's database, one connection per thread
    (sqlite3 connections stay in their thread). Cheap enough to poll: the
    `rlhf` command costs a second of CPU a call."""

    def __init__(self, workspace: Path) -> None:
        self.path = workspace / "rlhf.db"
        self.local = threading.local()

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            self.local.connection = connection
        for attempt in range(50):
            try:
                return connection.execute(sql, params).fetchall()
            except sqlite3.OperationalError:  # busy or locked for a moment: a writer checkpointing the WAL
                if attempt == 49:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def stage(self, run: str) -> tuple[str, int | None, str, int | None, int, int]:
        """(run status, run pid, stage status, stage pid, stage step, stage id) of a one-stage run."""
        found = self.rows(
            "SELECT r.status, r.pid, s.status, s.pid, s.step, s.id FROM run r JOIN stage s ON s.run_id = r.id "
            "WHERE r.name = ? ORDER BY s.position LIMIT 1", run)
        if not found:
            raise LookupError(run)
        return found[0]


def process(pid: int | None) -> psutil.Process | None:
    """The process, held by its start time too (a reused pid is not it), or None when gone."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except psutil.Error:
        return None


def gone(proc: psutil.Process | None) -> bool:
    if proc is None:
        return True
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def wait_for(predicate: Callable[[], Any], timeout: float, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(poll)


def sigkill(proc: psutil.Process | None) -> bool:
    if proc is None:
        return False
    try:
        proc.send_signal(signal.SIGKILL)  # psutil checks it is still the process we saw
        return True
    except psutil.Error:
        return False


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds: other people's work on the same cores."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = [os.getloadavg()[0]]
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(5.0):
            self.samples.append(os.getloadavg()[0])


@dataclass
class Kill:
    where: str  # which run or annotator
    plan: str  # "random" or "checkpoint" (pretraining), "mid-batch", "mid-ranking"
    target: str  # "stage", "stage+run", "run", "console"
    phase: str = ""  # where it landed, as seen afterwards
    detail: str = ""
    torn: str = ""  # a checkpoint folder of that leg left without its last file: what it held


@dataclass
class Part:
    name: str
    kills: list[Kill] = field(default_factory=list)
    resumes: int = 0
    resume_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_kill(self, kill: Kill) -> None:
        with self.lock:
            self.kills.append(kill)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        print(f"  ! {self.name}: {text}", flush=True)


def resume(run: str, env: dict[str, str], part: Part) -> bool:
    """`rlhf resume RUN --detach`; a run still being recorded as ended (the run
    process exiting) is retried for a while, any other refusal is a failure."""
    for _ in range(60):
        result = rlhf(["resume", run, "--detach"], env)
        if result.returncode == 0:
            with part.lock:
                part.resumes += 1
            return True
        message = (result.stderr or result.stdout).strip()
        if "still" not in message:
            with part.lock:
                part.resume_errors.append(f"{run}: rlhf resume exit {result.returncode}: {message[-400:]}")
            return False
        time.sleep(0.5)
    with part.lock:
        part.resume_errors.append(f"{run}: rlhf resume kept answering that the run is still active")
    return False


def finished_writing(folder: Path) -> bool:
    """Whether the checkpoint's last file is there and whole (JSON that parses)."""
    try:
        json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


STAGING = ".staging"  # where a checkpoint is written before its rename into place


def checkpoint_folders(checkpoints: Path) -> list[Path]:
    """The `checkpoint-STEP` folders published in `checkpoints` and those being written in its staging folder."""
    found: list[Path] = []
    for folder in (checkpoints, checkpoints / STAGING):
        with suppress(FileNotFoundError):
            found += [folder / name for name in os.listdir(folder) if name.startswith("checkpoint-")]
    return found


def written_since(folder: Path, since: float) -> bool:
    """Whether the folder or a file in it changed at or after `since` (time.time())."""
    try:
        return folder.stat().st_mtime >= since or any(p.stat().st_mtime >= since for p in folder.iterdir())
    except FileNotFoundError:
        return False


# --- part 1: pretraining -----------------------------------------------------------------------


@dataclass
class PretrainSettings:
    max_steps: int
    save_every: int
    documents: int
    rel_tol: float


class Pretraining:
    def __init__(self, root: Path, env: dict[str, str], settings: PretrainSettings, kills: int, chains: int,
                 rng: random.Random) -> None:
        self.ws = root / "pretrain"
        self.env = {**env, "RLHF_WORKSPACE": str(self.ws), "RLHF_CPU_SLOTS": str(chains)}
        self.s = settings
        self.spec = root / "pretrain.toml"
        self.spec.write_text(PRETRAIN_SPEC.format(max_steps=settings.max_steps, save_every=settings.save_every,
                                                  documents=settings.documents))
        self.db = Reader(self.ws)
        self.part = Part("pretraining")
        self.reference: dict[str, dict[int, float]] = {}
        self.step_seconds = 0.15
        self.startup: list[float] = []  # stage process found -> first step reported
        self.write_seconds: list[float] = []  # checkpoint folder seen -> its trainer_state.json seen
        self.published_torn = 0  # torn folders found under a published checkpoint-N name (staging should make it 0)
        plans = ["checkpoint"] * (kills // 2) + ["random"] * (kills - kills // 2)
        rng.shuffle(plans)
        self.chains = [(i, plans[i::chains], random.Random(rng.random())) for i in range(chains)]
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        self.run_reference()
        threads = [threading.Thread(target=self.chain, args=chain, name=f"chain-{chain[0]}") for chain in self.chains]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.summarise()

    def run_reference(self) -> None:
        result = rlhf(["run", str(self.spec), "--name", "reference"], self.env)
        if result.returncode != 0:
            raise SystemExit(f"the uninterrupted reference run failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        self.reference = self.series("reference")
        walls = [w for _, w in sorted(self.walls("reference").items())]
        self.step_seconds = (walls[-1] - walls[0]) / max(1, len(walls) - 1)
        print(f"  pretraining: reference done, {len(self.reference['train/loss'])} steps, "
              f"{self.step_seconds:.3f} s a step", flush=True)

    def series(self, run: str) -> dict[str, dict[int, float]]:
        """Every metric series of a run through `rlhf metrics --json`, step -> value;
        a step stored twice is recorded under the key `key#dup`."""
        result = rlhf(["metrics", run, "--json"], self.env)
        out: dict[str, dict[int, float]] = {}
        for one in json.loads(result.stdout or "[]"):
            values: dict[int, float] = {}
            for point in one["points"]:
                if int(point["step"]) in values:
                    out.setdefault(f"{one['key']}#dup", {})[int(point["step"])] = point["value"]
                values[int(point["step"])] = point["value"]
            out[one["key"]] = values
        return out

    def walls(self, run: str) -> dict[int, float]:
        result = rlhf(["metrics", run, "--key", "train/loss", "--json"], self.env)
        (only,) = json.loads(result.stdout)
        return {int(p["step"]): p["wall_time"] for p in only["points"]}

    # --- one chain: runs, each killed and resumed until its share of kills is done ---------------

    def chain(self, index: int, plans: list[str], rng: random.Random) -> None:
        number = 0
        while plans:
            number += 1
            name = f"pre-{index}-{number}"
            result = rlhf(["run", str(self.spec), "--name", name, "--detach"], self.env)
            if result.returncode != 0:
                self.part.problem(f"{name}: rlhf run exit {result.returncode}: {result.stderr[-300:]}")
                return
            record: dict[str, Any] = {"run": name, "kills": 0}
            self.runs.append(record)
            seen_pids: set[int] = set()
            while True:
                leg = self.leg(name, plans[0] if plans else None, rng, seen_pids)
                if leg is None:  # the run ended without (another) kill
                    break
                plans.pop(0)
                record["kills"] += 1
                if not resume(name, self.env, self.part):
                    break
            self.check_run(name, record)

    def leg(self, run: str, plan: str | None, rng: random.Random, seen: set[int]) -> Kill | None:
        """Find this leg's stage process, kill it as planned, wait for the dust to
        settle; None when the run ends first (or no kill is planned)."""
        found = wait_for(lambda: self.stage_process(run, seen), timeout=300)
        if not found or found == "ended":
            if not found:
                self.part.problem(f"{run}: no stage process within 300 s")
            return None
        worker, supervisor, stage_id, leg_start = found
        seen.add(worker.pid)
        resumed = self.resumed_step(stage_id)
        checkpoints = self.checkpoints_dir(run)
        if plan is None:
            wait_for(lambda: self.db.stage(run)[0] in TERMINAL, timeout=900, poll=0.5)
            return None
        if plan == "checkpoint":
            target = "stage" if rng.random() < 0.75 else "stage+run"
            kill = self.kill_mid_checkpoint(run, worker, supervisor, checkpoints, resumed, target, rng)
        else:
            roll = rng.random()
            target = "stage" if roll < 0.6 else "stage+run" if roll < 0.8 else "run"
            kill = self.kill_at_random(run, worker, supervisor, stage_id, leg_start, target, rng)
        if kill is None:
            return None
        # Let the dust settle: the killed processes gone, the run process done recording.
        if "stage" in kill.target and not wait_for(lambda: gone(worker), timeout=60):
            self.part.problem(f"{run}: the stage process outlived SIGKILL for 60 s")
        if not wait_for(lambda: gone(supervisor), timeout=120):
            self.part.problem(f"{run}: the run process did not end within 120 s of its stage's death")
        if "stage" in kill.target:
            torn = self.torn_this_leg(checkpoints, resumed, leg_start)
            kill.torn = torn
        else:
            kill.detail = "stage still alive at resume" if not gone(worker) else "stage had stopped"
        self.part.add_kill(kill)
        return kill

    def stage_process(self, run: str, seen: set[int]) -> Any:
        run_status, run_pid, status, pid, _, stage_id = self.db.stage(run)
        if run_status in TERMINAL:
            return "ended"
        if status != "running" or not pid or pid in seen:
            return None
        worker, supervisor = process(pid), process(run_pid)
        if worker is None or supervisor is None:
            return None
        return worker, supervisor, stage_id, time.time()

    def checkpoints_dir(self, run: str) -> Path:
        (run_id,) = self.db.rows("SELECT id FROM run WHERE name = ?", run)[0]
        return self.ws / "runs" / f"{run_id:05d}" / "pre" / "checkpoints"

    def resumed_step(self, stage_id: int) -> int:
        rows = self.db.rows("SELECT data FROM event WHERE stage_id = ? AND kind = 'StageStarted' "
                            "ORDER BY id DESC LIMIT 1", stage_id)
        source = json.loads(rows[0][0]).get("resume_from") if rows else None
        return int(Path(source).name.rpartition("-")[2]) if source else 0

    def torn_this_leg(self, checkpoints: Path, resumed: int, leg_start: float) -> str:
        """A checkpoint folder written in this leg that lacks its last file: what it holds.
        Checkpoints are written under checkpoints/.staging/ and renamed into place when whole
        (engine/stages/common/checkpoint_writing.py), so a torn one is normally a staged one;
        one under its published name counts in `published_torn` too, and should never be."""
        for path in sorted(checkpoint_folders(checkpoints)):
            step = int(path.name.rpartition("-")[2])
            if step > resumed and not finished_writing(path) and written_since(path, leg_start - 1):
                where = f"{STAGING}/{path.name}" if path.parent.name == STAGING else path.name
                if path.parent.name != STAGING:
                    self.published_torn += 1
                return f"{where} torn: {', '.join(sorted(p.name for p in path.iterdir())) or 'empty'}"
        return ""

    def logged_since(self, stage_id: int, since: float) -> int | None:
        """The newest step this leg's stage process logged (its train/loss reached the
        store after `since`), or None. The stage row's step is no use here: a resumed
        stage shows the step it had reached before the kill until it reports anew."""
        rows = self.db.rows("SELECT max(step) FROM metric WHERE stage_id = ? AND key = 'train/loss' "
                            "AND wall_time >= ?", stage_id, since)
        return rows[0][0] if rows else None

    def kill_at_random(self, run: str, worker: psutil.Process, supervisor: psutil.Process, stage_id: int,
                       leg_start: float, target: str, rng: random.Random) -> Kill | None:
        """One in five while the stage process starts (imports, data, model, the
        Trainer, the checkpoint loaded), the rest at a uniform moment of what is
        left of its training once its first step of this leg is in the store."""
        if rng.random() < 0.2:
            startup = statistics.median(self.startup) if self.startup else 12.0
            time.sleep(rng.uniform(0, startup))
        else:
            step = wait_for(lambda: self.logged_since(stage_id, leg_start) or gone(worker), timeout=600, poll=0.1)
            if gone(worker):
                return None
            self.startup.append(time.time() - leg_start)
            time.sleep(rng.uniform(0, max(0.2, (self.s.max_steps - step) * self.step_seconds)))
        if self.db.stage(run)[0] in TERMINAL or gone(worker):
            return None
        step = self.logged_since(stage_id, leg_start)
        if "run" in target:
            sigkill(supervisor)
        if "stage" in target:
            sigkill(worker)
        phase = "starting (no step of this leg logged)" if step is None else f"training (step {step} logged)"
        return Kill(run, "random", target, phase)

    def kill_mid_checkpoint(self, run: str, worker: psutil.Process, supervisor: psutil.Process, checkpoints: Path,
                            resumed: int, target: str, rng: random.Random) -> Kill | None:
        """Kill the stage while the checkpoint aimed at (one of the next three) is being written.

        A folder counts as being written when a file in it changed since the leg
        began and its trainer_state.json is missing: a torn folder left by an
        earlier kill is there from the start, but only rewritten when training
        reaches its step again."""
        every, last = self.s.save_every, self.s.max_steps // self.s.save_every * self.s.save_every
        aim = min(last, (resumed // every + 1 + rng.randrange(3)) * every)
        leg_start = time.time()
        first_seen: dict[int, float] = {}
        finished: set[int] = set()
        while aim <= last:
            if gone(worker):
                return None  # it ended (or was ended) before the checkpoint we waited for
            now = time.monotonic()
            with suppress(FileNotFoundError):
                for path in checkpoint_folders(checkpoints):
                    name = path.name
                    step = int(name.rpartition("-")[2]) if name.rpartition("-")[2].isdigit() else -1
                    if step <= resumed or step in finished or not written_since(path, leg_start):
                        continue
                    first_seen.setdefault(step, now)
                    if (path / DONE_MARKER).exists():
                        finished.add(step)
                        self.write_seconds.append(now - first_seen[step])
                        continue
                    if step < aim:
                        continue
                    # A random point of the write: up to the median write time seen so far.
                    writing = min(2.0, statistics.median(self.write_seconds)) if self.write_seconds else 0.25
                    time.sleep(rng.uniform(0, writing))
                    if not path.is_dir() or (path / DONE_MARKER).exists():  # too late: aim at the next one
                        finished.add(step)
                        aim = step + every
                        break
                    if "run" in target:
                        sigkill(supervisor)
                    sigkill(worker)
                    return Kill(run, "checkpoint", target, f"aimed at {name}")
            time.sleep(0.005)
        wait_for(lambda: gone(worker), timeout=900, poll=0.5)  # missed the last one: the run ends
        return None

    # --- the figures --------------------------------------------------------------------------

    def check_run(self, run: str, record: dict[str, Any]) -> None:
        ended = wait_for(lambda: self.db.stage(run)[0] in TERMINAL, timeout=900, poll=0.5)
        detail = json.loads(rlhf(["status", run, "--json"], self.env).stdout or "{}")
        record["status"] = detail.get("status")
        record["attempts"] = detail.get("attempt")
        stage = (detail.get("stages") or [{}])[0]
        record["step"] = stage.get("step")
        if not ended or detail.get("status") != "succeeded":
            record["error"] = stage.get("error") or detail.get("error")
            self.part.problem(f"{run} ended {detail.get('status')}: {record['error']}")
        series = self.series(run)
        record["duplicates"] = sum(len(v) for k, v in series.items() if k.endswith("#dup"))
        record["duplicated_keys"] = sorted(k.removesuffix("#dup") for k in series if k.endswith("#dup"))
        losses = series.get("train/loss", {})
        expected = list(range(1, self.s.max_steps + 1))
        record["all_steps_once"] = sorted(losses) == expected and not record["duplicates"]
        extra, missing = sorted(set(losses) - set(expected)), sorted(set(expected) - set(losses))
        if extra or missing or record["step"] != self.s.max_steps:
            self.part.problem(f"{run} ended at step {record['step']} of max_steps {self.s.max_steps}: train/loss "
                              f"steps beyond it {extra}, missing {missing}")
        if record["duplicates"]:
            self.part.problem(f"{run}: steps stored twice in {record['duplicated_keys']}")
        worst = 0.0
        for key in ("train/loss", "train/learning_rate"):
            reference = self.reference.get(key, {})
            for step, value in series.get(key, {}).items():
                if step in reference:
                    worst = max(worst, abs(value - reference[step]) / max(abs(reference[step]), 1e-12))
        record["max_rel_diff"] = worst
        record["matches"] = record["all_steps_once"] and worst <= self.s.rel_tol and record["status"] == "succeeded"
        print(f"  pretraining: {run} {record['status']} at step {record['step']} after {record['kills']} kills, "
              f"duplicates {record['duplicates']}, max rel diff {worst:.2e}", flush=True)

    def summarise(self) -> None:
        kills = self.part.kills
        f = self.part.figures
        f["runs"] = len(self.runs)
        f["kills"] = len(kills)
        f["kills at a random moment"] = sum(k.plan == "random" for k in kills)
        f["  of which while starting"] = sum(k.phase.startswith("starting") for k in kills if k.plan == "random")
        f["  of which while training"] = sum(k.phase.startswith("training") for k in kills if k.plan == "random")
        f["  of which landed in a checkpoint write"] = sum(bool(k.torn) for k in kills if k.plan == "random")
        f["kills aimed at a checkpoint write"] = sum(k.plan == "checkpoint" for k in kills)
        f["  verified mid-checkpoint (folder torn)"] = sum(bool(k.torn) for k in kills if k.plan == "checkpoint")
        f["  torn folders under a published checkpoint-N name"] = self.published_torn
        torn = [k.torn for k in kills if k.torn]
        f["  torn: no weights yet / weights, no optimizer.pt / both, no trainer_state"] = " / ".join(str(n) for n in (
            sum("model.safetensors" not in t for t in torn),
            sum("model.safetensors" in t and "optimizer.pt" not in t for t in torn),
            sum("model.safetensors" in t and "optimizer.pt" in t for t in torn)))
        f["killed: stage / stage+run / run"] = " / ".join(
            str(sum(k.target == t for k in kills)) for t in ("stage", "stage+run", "run"))
        f["resumes / failed"] = f"{self.part.resumes} / {len(self.part.resume_errors)}"
        f["runs succeeded at max_steps"] = sum(
            r.get("status") == "succeeded" and r.get("step") == self.s.max_steps for r in self.runs)
        f["runs with every step once, losses as uninterrupted"] = sum(bool(r.get("matches")) for r in self.runs)
        f["max rel diff of train/loss, lr vs uninterrupted"] = (
            f"{max((r.get('max_rel_diff', 0.0) for r in self.runs), default=0.0):.2e}")
        f["steps stored twice"] = sum(r.get("duplicates", 0) for r in self.runs)
        self.part.figures["ok"] = (
            f["runs"] == f["runs succeeded at max_steps"] == f["runs with every step once, losses as uninterrupted"]
            and f["steps stored twice"] == 0 and not self.part.resume_errors and not self.part.problems
            and f["kills"] >= len(self.chains) and f["  verified mid-checkpoint (folder torn)"] > 0
            and self.published_torn == 0
        )


# --- part 2: a judge killed mid-batch ------------------------------------------------------------


class JudgeKills:
    def __init__(self, root: Path, env: dict[str, str], kills: int, items: int, rng: random.Random) -> None:
        self.ws = root / "judge"
        self.env = {**env, "RLHF_WORKSPACE": str(self.ws)}
        self.root = root
        self.items = items
        self.quota = kills
        self.rng = rng
        self.db = Reader(self.ws)
        self.part = Part("judge")
        self.batches: list[dict[str, Any]] = []
        open_workspace(self.ws).close()  # created here, in the main thread: see main()
        tasks = generate_tasks(max(4 * items, 200), seed=11, split="train")
        unique = list({t.prompt: t for t in tasks}.values())
        self.tasks = unique

    def make_batch(self, number: int) -> int:
        workspace = open_workspace(self.ws, create=False)
        try:
            store = workspace.store
            start = (number * self.items) % max(1, len(self.tasks) - self.items)
            tasks = self.tasks[start:start + self.items]
            ids = store.add_prompts([{"text": t.prompt, "reference": t.reference} for t in tasks])
            batch = store.create_sample_batch(name=f"judge-{number}", settings={}, sources=["good", "chatty", "bad"])
            store.add_samples([
                {"prompt_id": pid, "batch_id": batch.id, "response": text, "checkpoint": source}
                for pid, t in zip(ids, tasks)
                for text, source in ((t.reference, "good"), (f"{t.reference}. Hope this helps!", "chatty"),
                                     ("no idea", "bad"))
            ])
            return int(batch.id)
        finally:
            workspace.close()

    def judged(self, batch: int) -> list[tuple[int, int, str, int | None]]:
        return self.db.rows("SELECT id, item_id, annotator, supersedes FROM judgement WHERE batch_id = ?", batch)

    def run(self) -> None:
        number = 0
        while len(self.part.kills) < self.quota:
            batch = self.make_batch(number)
            name = f"judge-{number}"
            number += 1
            spec = self.root / f"{name}.toml"
            spec.write_text(RANK_SPEC.format(batch=batch))
            result = rlhf(["run", str(spec), "--name", name, "--detach"], self.env)
            if result.returncode != 0:
                self.part.problem(f"{name}: rlhf run exit {result.returncode}: {result.stderr[-300:]}")
                return
            record: dict[str, Any] = {"run": name, "batch": batch, "kills": 0, "seen_after_kills": set()}
            self.batches.append(record)
            seen: set[int] = set()
            while True:
                kill = self.leg(name, batch, record, seen) if len(self.part.kills) < self.quota else None
                if kill is None:
                    break
                record["kills"] += 1
                if not resume(name, self.env, self.part):
                    break
            self.check_batch(record)
        self.summarise()

    def leg(self, run: str, batch: int, record: dict[str, Any], seen: set[int]) -> Kill | None:
        def started() -> Any:
            run_status, run_pid, status, pid, _, _ = self.db.stage(run)
            if run_status in TERMINAL:
                return "ended"
            if status == "running" and pid and pid not in seen:
                worker, supervisor = process(pid), process(run_pid)
                if worker and supervisor:
                    return worker, supervisor
            return None

        found = wait_for(started, timeout=300)
        if not found or found == "ended":
            return None
        worker, supervisor = found
        seen.add(worker.pid)
        before = len(self.judged(batch))
        aim = before + self.rng.randint(1, 30)
        reached = wait_for(lambda: len(self.judged(batch)) >= aim or gone(worker), timeout=300, poll=0.01)
        if not reached or gone(worker):
            return None
        time.sleep(self.rng.uniform(0, 0.015))
        roll = self.rng.random()
        target = "stage" if roll < 0.7 else "stage+run" if roll < 0.85 else "run"
        if "run" in target:
            sigkill(supervisor)
        if "stage" in target:
            sigkill(worker)
        wait_for(lambda: gone(worker), timeout=60)
        if not wait_for(lambda: gone(supervisor), timeout=120):
            self.part.problem(f"{run}: the run process did not end within 120 s")
        rows = self.judged(batch)
        record["seen_after_kills"].update(r[0] for r in rows)
        claimed = self.db.rows("SELECT count(*) FROM itemclaim c JOIN rankitem i ON i.id = c.item_id "
                               "WHERE i.batch_id = ? AND c.annotator = 'judge:demo'", batch)[0][0]
        kill = Kill(run, "mid-batch", target, f"{len(rows)} judged", "claim left" if claimed else "")
        self.part.add_kill(kill)
        return kill

    def check_batch(self, record: dict[str, Any]) -> None:
        run, batch = record["run"], record["batch"]
        wait_for(lambda: self.db.stage(run)[0] in TERMINAL, timeout=600, poll=0.3)
        workspace = open_workspace(self.ws, create=False)
        try:
            store = workspace.store
            rows = store.feedback.judgements(batch_id=batch)
            live = store.feedback.live_judgements(batch_ids=[batch])
            progress = store.feedback.progress(batch_id=batch)
            items = {i for (i,) in self.db.rows("SELECT id FROM rankitem WHERE batch_id = ?", batch)}
            verdicts = dict(self.db.rows("SELECT id, verdicts FROM rankitem WHERE batch_id = ?", batch))
            claims = self.db.rows("SELECT count(*) FROM itemclaim c JOIN rankitem i ON i.id = c.item_id "
                                  "WHERE i.batch_id = ?", batch)[0][0]
        finally:
            workspace.close()
        status = self.db.stage(run)[0]
        per_item: dict[int, int] = {}
        for judgement in live:
            per_item[judgement.item_id] = per_item.get(judgement.item_id, 0) + 1
        ids = {r.id for r in rows}
        record.update(
            status=status, items=len(items), rows=len(rows), live=len(live),
            lost=len(record["seen_after_kills"] - ids),
            unjudged=sum(1 for i in items if per_item.get(i, 0) == 0),
            twice=sum(1 for n in per_item.values() if n > 1) + sum(1 for r in rows if r.supersedes is not None),
            annotators=sorted({r.annotator for r in rows}),
            verdicts_consistent=all(verdicts[i] == per_item.get(i, 0) for i in items),
            claims=claims, done=f"{progress.done}/{progress.total}",
        )
        record["ok"] = (status == "succeeded" and record["lost"] == 0 and record["unjudged"] == 0
                        and record["twice"] == 0 and record["rows"] == len(items) and claims == 0
                        and record["verdicts_consistent"] and record["annotators"] == ["judge:demo"])
        if not record["ok"]:
            self.part.problem(f"{run}: {({k: v for k, v in record.items() if k != 'seen_after_kills'})}")
        print(f"  judge: {run} {status} after {record['kills']} kills: {record['rows']} judgements for "
              f"{record['items']} items, lost {record['lost']}, twice {record['twice']}", flush=True)

    def summarise(self) -> None:
        kills, f = self.part.kills, self.part.figures
        f["batches (runs)"] = len(self.batches)
        f["kills mid-batch"] = len(kills)
        f["  of which with an item claimed, its verdict not committed"] = sum(k.detail == "claim left" for k in kills)
        f["killed: stage / stage+run / run"] = " / ".join(
            str(sum(k.target == t for k in kills)) for t in ("stage", "stage+run", "run"))
        f["resumes / failed"] = f"{self.part.resumes} / {len(self.part.resume_errors)}"
        f["items / judgements in the store"] = (f"{sum(b.get('items', 0) for b in self.batches)} / "
                                                f"{sum(b.get('rows', 0) for b in self.batches)}")
        f["judgements lost"] = sum(b.get("lost", 0) for b in self.batches)
        f["items left unjudged"] = sum(b.get("unjudged", 0) for b in self.batches)
        f["items judged twice"] = sum(b.get("twice", 0) for b in self.batches)
        f["batches done and consistent"] = f"{sum(bool(b.get('ok')) for b in self.batches)} of {len(self.batches)}"
        f["ok"] = all(b.get("ok") for b in self.batches) and not self.part.problems and not self.part.resume_errors


# --- part 3: the rank console killed mid-ranking ---------------------------------------------------


class ConsoleKills:
    ANNOTATORS = ("ann", "bob")

    def __init__(self, root: Path, env: dict[str, str], kills: int, items: int, rng: random.Random) -> None:
        self.ws = root / "console"
        self.env = {**env, "PYTHONPATH": str(ROOT)}
        self.quota = {name: kills // 2 + (i < kills % 2) for i, name in enumerate(self.ANNOTATORS)}
        self.items = items
        self.rngs = {name: random.Random(rng.random()) for name in self.ANNOTATORS}
        self.part = Part("console")
        self.reported: dict[str, list[tuple[int, int, str, list[int]]]] = {n: [] for n in self.ANNOTATORS}
        self.batch = 0
        open_workspace(self.ws).close()  # created here, in the main thread: see main()

    def run(self) -> None:
        from tests.console.rank_runner import make_rank_batch  # the tests' batch builder (textual on import)

        workspace = open_workspace(self.ws, create=False)
        try:
            self.batch = make_rank_batch(workspace.store, prompts=self.items, k=2, needed=2, name="console")
        finally:
            workspace.close()
        threads = [threading.Thread(target=self.annotator, args=(name,), name=name) for name in self.ANNOTATORS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.check()

    @contextmanager
    def runner(self, name: str, seed: int) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str | None]]]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.console.rank_runner", str(self.ws), str(self.batch), name, f"--seed={seed}"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.strip())
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            reader.join(timeout=30)

    def take(self, name: str, line: str) -> None:
        if line.startswith("judged "):
            _, judgement, item, outcome, shown = line.split(" ", 4)
            self.reported[name].append((int(judgement), int(item), outcome, json.loads(shown)))

    def annotator(self, name: str) -> None:
        rng = self.rngs[name]
        seed = 0
        while True:
            seed += 1
            killing = sum(k.where == name for k in self.part.kills) < self.quota[name]
            with self.runner(name, seed) as (proc, lines):
                stop_after = rng.randint(0, 4) if killing else None
                got, done = 0, False
                while True:
                    try:
                        line = lines.get(timeout=120)
                    except queue.Empty:
                        self.part.problem(f"{name}: no line from the rank runner in 120 s")
                        return
                    if line is None:
                        break
                    self.take(name, line)
                    if line == "done":
                        done = True
                    elif line.startswith("judged "):
                        got += 1
                    if stop_after is not None and (line == "ready" or line.startswith("judged ")) \
                            and got >= stop_after:
                        time.sleep(rng.uniform(0, 0.08))  # some way into the next judgement
                        proc.kill()
                        proc.wait(timeout=30)
                        while (rest := lines.get(timeout=30)) is not None:  # lines printed before it died
                            self.take(name, rest)
                        self.part.add_kill(Kill(name, "mid-ranking", "console",
                                                f"after {got} judgements in this session"))
                        break
                if stop_after is None or done:
                    if proc.wait(timeout=60) != 0 and not done:
                        stderr = proc.stderr.read() if proc.stderr else ""
                        self.part.problem(f"{name}: the rank runner exited {proc.returncode}: {stderr[-500:]}")
                    if done:
                        return

    def check(self) -> None:
        workspace = open_workspace(self.ws, create=False)
        try:
            store = workspace.store
            rows = {r.id: r for r in store.feedback.judgements(batch_id=self.batch)}
            progress = store.feedback.progress(batch_id=self.batch)
            with store.engine.connect() as connection:
                integrity = connection.exec_driver_sql("PRAGMA integrity_check").scalar_one()
                claims = connection.exec_driver_sql("SELECT count(*) FROM itemclaim").scalar_one()
                verdicts: dict[int, int] = dict(connection.exec_driver_sql(
                    "SELECT id, verdicts FROM rankitem WHERE batch_id = ?", (self.batch,)).all())
            live = store.feedback.live_judgements(batch_ids=[self.batch])
        finally:
            workspace.close()
        reported = {j: (name, item, outcome, shown)
                    for name, judged in self.reported.items() for j, item, outcome, shown in judged}
        lost = [j for j, (name, item, outcome, shown) in reported.items()
                if j not in rows or (rows[j].annotator, rows[j].item_id, rows[j].outcome, rows[j].shown)
                != (name, item, outcome, shown)]
        unreported = sorted(set(rows) - set(reported))
        pairs = [(r.annotator, r.item_id) for r in rows.values() if r.outcome != "undone"]
        twice = len(pairs) - len(set(pairs))
        live_count: dict[int, int] = {}
        for judgement in live:
            live_count[judgement.item_id] = live_count.get(judgement.item_id, 0) + 1
        f = self.part.figures
        kills = len(self.part.kills)
        f["annotators at once / items x needed"] = f"{len(self.ANNOTATORS)} / {self.items} x 2"
        f["kills mid-ranking"] = kills
        f["judgements reported committed"] = len(reported)
        f["  of which not in the store as reported (lost)"] = len(lost)
        f["rows in the store not reported (in flight at a kill)"] = f"{len(unreported)} (at most {kills})"
        f["items judged twice by one annotator"] = twice
        f["batch done"] = f"{progress.done}/{progress.total}"
        f["claims left / verdict counts consistent / integrity"] = (
            f"{claims} / {all(verdicts[i] == live_count.get(i, 0) for i in verdicts)} / {integrity}")
        f["ok"] = (not lost and len(unreported) <= kills and twice == 0 and progress.done == progress.total
                   == self.items * 2 and claims == 0 and integrity == "ok" and not self.part.problems
                   and all(verdicts[i] == live_count.get(i, 0) for i in verdicts))


# --- the whole bench ---------------------------------------------------------------------------


def table(parts: list[Part], command: str, seconds: float, load: list[float]) -> str:
    width = max(len(k) for p in parts for k in p.figures) + 2
    lines = [f"bench_faults: {command}", f"wall time {seconds / 60:.1f} min; load average (1 min) while it ran: "
             f"mean {statistics.mean(load):.1f}, max {max(load):.1f} on {os.cpu_count()} cores", ""]
    for part in parts:
        lines.append(f"{part.name}  [{'ok' if part.figures.get('ok') else 'FAILED'}]")
        for key, value in part.figures.items():
            if key != "ok":
                lines.append(f"  {key:<{width}} {value}")
        for error in part.resume_errors:
            lines.append(f"  resume failed: {error}")
        for problem in part.problems:
            lines.append(f"  problem: {problem}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kills per part")
    parser.add_argument("--chains", type=int, default=2, help="pretraining runs killed at the same time")
    parser.add_argument("--max-steps", type=int, default=80)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--documents", type=int, default=300, help="corpus documents (300: ~63 steps an epoch)")
    parser.add_argument("--rel-tol", type=float, default=1e-3, help="loss and lr against the uninterrupted run")
    parser.add_argument("--judge-items", type=int, default=400, help="items per judged batch")
    parser.add_argument("--console-items", type=int, default=120, help="items of the ranked batch (2 annotators)")
    parser.add_argument("--parts", default="pretrain,judge,console")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    python = Path(sys.executable)
    command = shlex.join([str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else str(python), *sys.argv])

    temporary = tempfile.TemporaryDirectory(prefix="bench-faults-") if args.dir is None else None
    root = Path(temporary.name) if temporary else args.dir
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "RLHF_CACHE_DIR": str(root / "cache"),  # built-in tokenizer and corpus, built once for every run
        "RLHF_DEVICES": "cpu",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # one thread a process: 2 shared cores, several processes
        "TQDM_DISABLE": "1",
    }
    rng = random.Random(args.seed)
    # The parts' workspaces are created before their threads start: creating two at once
    # in one process fails (Alembic's migration context is one per process, not per thread).
    wanted = set(args.parts.split(","))
    jobs: list[tuple[Part, Callable[[], None]]] = []
    if "pretrain" in wanted:
        settings = PretrainSettings(args.max_steps, args.save_every, args.documents, args.rel_tol)
        pretraining = Pretraining(root, env, settings, args.kills, args.chains, random.Random(rng.random()))
        jobs.append((pretraining.part, pretraining.run))
    if "judge" in wanted:
        judge = JudgeKills(root, env, args.kills, args.judge_items, random.Random(rng.random()))
        jobs.append((judge.part, judge.run))
    if "console" in wanted:
        console = ConsoleKills(root, env, args.kills, args.console_items, random.Random(rng.random()))
        jobs.append((console.part, console.run))

    load = LoadSampler()
    load.start()
    started = time.monotonic()
    print(f"bench_faults: {len(jobs)} parts in {root}, load average {os.getloadavg()[0]:.1f}", flush=True)

    def guarded(part: Part, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001  a crash of one part is a finding; the others go on
            part.problem(f"the bench itself failed: {type(exc).__name__}: {exc}")
            part.figures["ok"] = False

    threads = [threading.Thread(target=guarded, args=job, name=job[0].name) for job in jobs]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        end_our_runs(root)
    load.stopped.set()
    seconds = time.monotonic() - started
    report = table([p for p, _ in jobs], command, seconds, load.samples)
    print("\n" + report)
    if args.json:
        args.json.write_text(json.dumps({p.name: {**p.figures, "problems": p.problems,
                                                  "resume_errors": p.resume_errors,
                                                  "kills": [k.__dict__ for k in p.kills]}
                                         for p, _ in jobs}, indent=2, default=str))
    if temporary:
        temporary.cleanup()
    return 0 if all(p.figures.get("ok") for p, _ in jobs) else 1


def end_our_runs(root: Path) -> None:
    """Whatever our runs left running (a bench that failed half-way): the run
    and stage processes recorded in this bench's own workspaces, by pid."""
    for db in root.glob("*/rlhf.db"):
        with suppress(sqlite3.Error):
            connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            pids = [pid for (pid,) in connection.execute(
                "SELECT pid FROM run WHERE pid IS NOT NULL UNION SELECT pid FROM stage WHERE pid IS NOT NULL")]
            connection.close()
            for pid in pids:
                proc = process(pid)
                with suppress(psutil.Error):
                    if proc is not None and any(m in " ".join(proc.cmdline()) for m in (
                            "engine.runtime.supervisor", "engine.runtime.worker")) and str(root) in " ".join(
                            proc.cmdline()):
                        proc.kill()


if __name__ == "__main__":
    sys.exit(main())
